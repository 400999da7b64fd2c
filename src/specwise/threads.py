"""One-off heavy work on a thread that ends, so OpenMP keeps spinning between kernels."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def in_passing_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a short-lived thread; return its result or raise its exception.

    libgomp (one runtime, shared by torch and the kernels) keeps a thread team
    for every live thread that ever ran a parallel region. Once the teams hold
    more threads than there are CPUs it cuts its spin-wait from 300,000 to 100
    iterations, so every gap between two kernels becomes a sleep and a wake-up.
    Loading the model on the caller's thread left such a team behind it and cost
    a third of batch-1 speed (measured: 44 against 58-70 tok/s). A team dies with
    its thread, so loading, drafter building and profiling run on a thread that
    ends, and decoding stays on the engine loop's thread alone.
    """
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="specwise-setup")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
