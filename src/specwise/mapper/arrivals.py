"""When each request of an open-loop run is sent.

Poisson arrivals at ``rate`` requests/s, or gamma-distributed gaps with shape
``burstiness`` (1 = Poisson; < 1 burstier, > 1 more regular), with the mean
gap 1/rate either way, as ``vllm bench serve`` draws them. A trace replays each
item's own ``arrival_s``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from specwise.errors import SpecwiseError
from specwise.mapper.records import Load, WorkItem


def arrival_times(items: Sequence[WorkItem], load: Load, seed: int = 0) -> list[float] | None:
    """Send times in seconds from the start (non-decreasing), or None for a closed loop."""
    if load.concurrency is not None:
        return None
    if load.rate is None or load.rate <= 0:
        raise SpecwiseError(f"a rate must be > 0 requests/s, got {load.rate}")
    if load.burstiness <= 0:
        raise SpecwiseError(f"burstiness must be > 0, got {load.burstiness}")
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape=load.burstiness, scale=1.0 / (load.rate * load.burstiness), size=len(items))
    return np.cumsum(gaps).tolist()


def trace_times(items: Sequence[WorkItem]) -> list[float]:
    """Each item's own arrival_s (a recorded trace)."""
    missing = [i for i, item in enumerate(items) if item.arrival_s is None]
    if missing:
        raise SpecwiseError(f"a trace replay needs arrival_s on every request; request {items[missing[0]].request.id!r} has none")
    return [float(item.arrival_s) for item in items]  # type: ignore[arg-type]
