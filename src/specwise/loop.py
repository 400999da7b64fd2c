"""The long-lived engine loop: requests in at any time, tokens out as they are verified.

One thread owns the engine (model, KV cache, drafters), the scheduler and
the policies. It steps while there is work and sleeps on a condition while
there is none. Callers hand it sequences and aborts through one inbox, which
the thread drains between steps, so no engine state is ever touched from two
threads. ``LLM.generate``, the CLI, the benchmarks and the HTTP server all
run on it; policies live as long as it does and learn from all traffic.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from specwise.errors import SpecwiseError
from specwise.scheduler import Scheduler
from specwise.sequence import Sequence

log = logging.getLogger("specwise")

Listener = Callable[[Sequence, list[int]], None]
"""Called in the loop thread after each step that gave a sequence new tokens, with
those tokens; the last call has ``seq.finished`` set (reason "stop", "length",
"abort" or "error") and may carry none. It must be quick: the next step waits."""


class EngineLoop:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._cond = threading.Condition()
        self._inbox: deque[tuple[Sequence, Listener | None, bool]] = deque()
        """(sequence, listener, first) to submit, or (sequence, None, False) to abort."""
        self._listeners: dict[Sequence, tuple[Listener, int]] = {}
        """Per live sequence: its listener and how many output tokens it has been given."""
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = False

    def submit(self, seq: Sequence, listener: Listener, *, first: bool = False) -> None:
        """Queue a sequence; ``first`` puts it ahead of the waiting ones (a conversation's next turn)."""
        with self._cond:
            if self._closed:
                raise SpecwiseError("the engine loop is shut down")
            self._inbox.append((seq, listener, first))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="specwise-engine", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def abort(self, seq: Sequence) -> None:
        """Cancel a sequence at the next step boundary: its slot and drafter state are
        freed and its listener is told (reason "abort"). Harmless once it has finished."""
        with self._cond:
            self._inbox.append((seq, None, False))
            self._cond.notify_all()

    @property
    def num_waiting(self) -> int:
        """Submitted and not yet given a slot."""
        with self._cond:
            queued = sum(1 for _, listener, _ in self._inbox if listener is not None)
        return queued + len(self.scheduler.waiting)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    def _idle(self) -> bool:
        return not self._inbox and not self._busy and not self.scheduler.has_work()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; False if that takes longer than ``timeout``."""
        with self._cond:
            return self._cond.wait_for(self._idle, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Abort whatever is left and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        sched = self.scheduler
        while True:
            with self._cond:
                while not self._inbox and not sched.has_work() and not self._closed:
                    self._busy = False
                    self._cond.notify_all()  # wakes wait_idle
                    self._cond.wait()
                self._busy = True
                aborts = []
                for seq, listener, first in self._inbox:
                    if listener is None:
                        aborts.append(seq)
                    else:  # under the lock, so num_waiting never misses a request in transit
                        self._listeners[seq] = (listener, 0)
                        sched.submit(seq, first=first)
                self._inbox.clear()
                closed = self._closed
            for seq in aborts:
                self._abort(seq)
            if closed:
                for seq in [s for s, _ in sched.waiting] + list(sched.running):
                    self._abort(seq)
                return
            if sched.has_work():
                try:
                    finished = sched.step()
                except Exception as exc:  # outside a step's own guard: fail what runs, keep serving
                    log.error("the engine loop failed between steps", exc_info=exc)
                    finished = self._fail_running(exc)
                self._emit(list(sched.running) + finished)

    def _abort(self, seq: Sequence) -> None:
        if self.scheduler.abort(seq):
            self._emit([seq])

    def _fail_running(self, exc: Exception) -> list[Sequence]:
        failed = list(self.scheduler.running)
        for seq in failed:
            seq.error, seq.finish_reason = exc, "error"
            self.scheduler.engine.finish(seq, keep=False)
        self.scheduler.running = []
        return failed

    def _emit(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            entry = self._listeners.get(seq)
            if entry is None:
                continue
            listener, sent = entry
            total = len(seq.token_ids) - seq.num_prompt
            if total == sent and not seq.finished:
                continue
            if seq.finished:
                del self._listeners[seq]
            else:
                self._listeners[seq] = (listener, total)
            try:
                listener(seq, seq.token_ids[seq.num_prompt + sent :])
            except Exception as exc:  # a listener's bug must not stop the loop
                log.error("a listener of request %r failed", seq.request_id, exc_info=exc)
