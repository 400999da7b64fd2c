"""Continuous batching: requests join and leave between steps.

Each call to ``step`` admits waiting sequences into free cache slots (their
prompts run in one ragged prefill), asks the policy how many drafts each
running sequence gets, runs one engine step over all of them, and retires
the finished ones. A sequence's tokens never depend on its neighbours: the
model's rows are batch-invariant and each sequence verifies its own drafts.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from specwise.engine import Engine
from specwise.errors import SpecwiseError
from specwise.policy import Policy
from specwise.sequence import Sequence


@dataclass(slots=True, frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 8
    """Sequences decoded together (KV cache slots)."""
    max_prefill_tokens: int = 2048
    """Prompt tokens admitted per step; a longer prompt is admitted alone."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_prefill_tokens < 1:
            raise SpecwiseError("max_num_seqs and max_prefill_tokens must be >= 1")


class Scheduler:
    def __init__(self, engine: Engine, policy: Policy, config: SchedulerConfig) -> None:
        if engine.cache.num_slots < config.max_num_seqs:
            raise SpecwiseError(f"KV cache has {engine.cache.num_slots} slots for {config.max_num_seqs} sequences")
        self.engine, self.policy, self.config = engine, policy, config
        self.waiting: deque[tuple[Sequence, float]] = deque()
        self.running: list[Sequence] = []

    def submit(self, seq: Sequence, *, first: bool = False) -> None:
        """Queue a sequence; ``first`` puts it ahead of the others (a conversation's next turn)."""
        entry = (seq, time.perf_counter())
        if first:
            self.waiting.appendleft(entry)
        else:
            self.waiting.append(entry)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> list[Sequence]:
        """Admit, decode one step, retire; returns the sequences that finished."""
        self._admit()
        finished = [s for s in self.running if s.finished]  # a first token may already end one
        active = [s for s in self.running if not s.finished]
        if active:
            ks = self.policy.choose(active, [self.engine.max_draft(s) for s in active])
            start = time.perf_counter()
            drafted, accepted = self.engine.step(active, ks)
            draft_s = self.engine.last_draft_s
            target_s = time.perf_counter() - start - draft_s
            self.policy.observe(active, drafted, accepted, len(active) + sum(drafted), target_s, draft_s)
            finished += [s for s in active if s.finished]
        now = time.perf_counter()
        for seq in finished:
            seq.stats.wall_s = now - seq.started_at
            self.engine.finish(seq)
        self.running = [s for s in self.running if not s.finished]
        return finished

    def _admit(self) -> None:
        admitted: list[Sequence] = []
        budget = self.config.max_prefill_tokens
        while self.waiting and len(self.running) + len(admitted) < self.config.max_num_seqs:
            seq, submitted = self.waiting[0]
            if admitted and len(seq.token_ids) > budget:
                break
            self.waiting.popleft()
            seq.started_at = time.perf_counter()
            seq.stats.queue_s = seq.started_at - submitted
            budget -= len(seq.token_ids)
            admitted.append(seq)
        if admitted:
            self.engine.prefill(admitted)
            self.running += admitted
