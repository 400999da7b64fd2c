"""The engine loop on a scripted engine (no model): streaming, aborts, faults, idleness."""

from __future__ import annotations

from collections import defaultdict

import threading
import time
from types import SimpleNamespace

import pytest

from specwise.loop import EngineLoop
from specwise.sampling import SamplingParams
from specwise.scheduler import Scheduler, SchedulerConfig
from specwise.sequence import Sequence


class ScriptedEngine:
    """One token a step per sequence (its length so far); the prompt is fed in one step.
    ``fail_when`` makes a step raise if it holds a sequence of that id."""

    def __init__(self, slots: int) -> None:
        self.cache = SimpleNamespace(num_slots=slots, lengths=defaultdict(int))
        self.free = list(range(slots))
        self.last_draft_s: dict[str, float] = {}
        self.last_rows = 0
        self.fail_when: str | None = None
        self.step_delay = 0.0
        self.released: list[tuple[str, bool]] = []

    def admit(self, seq: Sequence) -> None:
        seq.slot = self.free.pop()

    def decoding(self, seq: Sequence) -> bool:
        return len(seq.token_ids) > seq.num_prompt

    def pending(self, seq: Sequence) -> int:
        return 1 if self.decoding(seq) else seq.num_prompt

    def max_draft(self, seq: Sequence) -> int:
        return 0

    def step(self, seqs, ks, chunks):
        time.sleep(self.step_delay)
        if any(s.request_id == self.fail_when for s in seqs):
            raise RuntimeError("injected fault")
        for seq in seqs:
            seq.token_ids.append(len(seq.token_ids))
            if len(seq.output_ids) >= seq.params.max_tokens:
                seq.finish_reason = "length"
        return [0] * len(seqs), [0] * len(seqs)

    def finish(self, seq: Sequence, *, keep: bool = True) -> None:
        if seq.slot >= 0:
            self.free.append(seq.slot)
            self.released.append((seq.request_id, keep))
            seq.slot = -1


def _loop(slots: int = 2) -> tuple[EngineLoop, ScriptedEngine]:
    engine = ScriptedEngine(slots)
    return EngineLoop(Scheduler(engine, SchedulerConfig(max_num_seqs=slots, max_batched_tokens=64))), engine  # type: ignore[arg-type]


class Collector:
    """A listener that records each request's tokens and end; ``done`` once ``expect`` ended."""

    def __init__(self, expect: int) -> None:
        self.tokens: dict[str, list[int]] = {}
        self.ended: dict[str, str] = {}
        self.done = threading.Event()
        self.expect = expect

    def __call__(self, seq: Sequence, new: list[int]) -> None:
        self.tokens.setdefault(seq.request_id, []).extend(new)
        if seq.finished:
            self.ended[seq.request_id] = seq.finish_reason or ""
            if len(self.ended) == self.expect:
                self.done.set()


def _seq(rid: str, max_tokens: int = 4) -> Sequence:
    return Sequence(rid, [7, 8, 9], 3, SamplingParams(max_tokens=max_tokens))


def test_streams_every_token_once_and_ends_each_request():
    loop, _ = _loop()
    got = Collector(3)
    for rid in "abc":
        loop.submit(_seq(rid), got)
    assert got.done.wait(5)
    assert got.tokens == {r: [3, 4, 5, 6] for r in "abc"}
    assert got.ended == {r: "length" for r in "abc"}
    assert loop.wait_idle(2)
    loop.close(2)


def test_abort_frees_a_running_slot_and_drops_a_waiting_request():
    loop, engine = _loop(slots=1)
    engine.step_delay = 0.01
    got = Collector(3)
    long, waiting, after = _seq("long", 10_000), _seq("waiting"), _seq("after")
    loop.submit(long, got)
    loop.submit(waiting, got)
    time.sleep(0.1)
    loop.abort(waiting)
    loop.abort(long)
    loop.submit(after, got)
    assert got.done.wait(5)
    assert got.ended == {"long": "abort", "waiting": "abort", "after": "length"}
    assert got.tokens["after"] == [3, 4, 5, 6] and not got.tokens.get("waiting")
    assert ("long", True) in engine.released
    loop.abort(after)  # harmless once finished
    assert loop.wait_idle(2)
    loop.close(2)


def test_a_failing_step_fails_its_requests_only_and_the_loop_goes_on():
    loop, engine = _loop(slots=1)
    engine.fail_when = "bad"
    got = Collector(3)
    for rid in ("ok1", "bad", "ok2"):
        loop.submit(_seq(rid), got)
    assert got.done.wait(5)
    assert got.ended == {"ok1": "length", "bad": "error", "ok2": "length"}
    assert loop.scheduler.failed_steps == 1
    assert ("bad", False) in engine.released, "a failed step's slot must keep nothing for prefix reuse"
    loop.close(2)


def test_a_listener_that_raises_does_not_stop_the_loop():
    loop, _ = _loop()
    got = Collector(1)

    def broken(seq, new):
        raise ValueError("listener bug")

    loop.submit(_seq("x"), broken)
    loop.submit(_seq("y"), got)
    assert got.done.wait(5)
    loop.close(2)


def test_close_aborts_what_is_left_and_refuses_more():
    loop, engine = _loop(slots=1)
    engine.step_delay = 0.01
    got = Collector(2)
    loop.submit(_seq("a", 10_000), got)
    loop.submit(_seq("b"), got)
    time.sleep(0.05)
    loop.close(2)
    assert got.done.wait(2) and set(got.ended.values()) == {"abort"}
    from specwise.errors import SpecwiseError

    with pytest.raises(SpecwiseError):
        loop.submit(_seq("c"), got)
