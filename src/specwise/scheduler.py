"""Continuous batching: requests join and leave between steps.

Each call to ``step`` admits waiting sequences into free cache slots, asks
the policy how many drafts each decoding sequence gets, fills the rest of
the step's row budget with chunks of the admitted prompts, oldest first
(chunked prefill), runs one engine step over all of them, and retires the
finished ones. A sequence's tokens never depend on its neighbours: the
model's rows are batch-invariant and each sequence verifies its own drafts.

Each sequence carries its own policy (or none: plain); sequences that share
a policy are decided together, each group seeing the others' rows as a fixed
part of the step. A step that raises fails only the sequences in it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

from specwise.engine import Engine
from specwise.errors import SpecwiseError
from specwise.policy import Policy
from specwise.sequence import Sequence, group_by

log = logging.getLogger("specwise")


@dataclass(slots=True, frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 8
    """Sequences decoded together (KV cache slots)."""
    max_batched_tokens: int = 256
    """Rows per step before drafts: one per decoding sequence, the rest for prompt
    chunks. A longer prompt is fed over several steps (chunked prefill), so the
    decoding sequences keep going. The default keeps a step near 0.35 s on 2 cores,
    where a step's cost is already linear in its rows (per-step overhead ~6%)."""

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise SpecwiseError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_batched_tokens < self.max_num_seqs + 1:
            raise SpecwiseError(
                f"max_batched_tokens ({self.max_batched_tokens}) must exceed max_num_seqs ({self.max_num_seqs}), "
                "or prompts could starve behind the decoding sequences"
            )


STEP_LOG = 20_000


@dataclass(slots=True, frozen=True)
class StepSample:
    rows: int
    """Rows of the target forward: fed tokens, drafts, forced tokens."""
    decoding: int
    """Sequences past their prompt in the step."""
    prefilling: int
    """Sequences feeding a prompt chunk."""
    context: int
    """Tokens the step's rows attend to in all (each sequence's length after the step's rows)."""
    target_s: float
    draft_s: float


class Scheduler:
    def __init__(self, engine: Engine, config: SchedulerConfig, clock: Callable[[], float] = time.perf_counter) -> None:
        """``clock``: where time comes from (a simulator runs the scheduler on its own)."""
        if engine.cache.num_slots < config.max_num_seqs:
            raise SpecwiseError(f"KV cache has {engine.cache.num_slots} slots for {config.max_num_seqs} sequences")
        self.engine = engine
        self.config = config
        self.clock = clock
        self.waiting: deque[tuple[Sequence, float]] = deque()
        self.running: list[Sequence] = []
        self.failed_steps = 0
        self.step_log: deque[StepSample] = deque(maxlen=STEP_LOG)
        """The latest steps' shapes and times (what a simulator's step-cost model is fitted to)."""

    def submit(self, seq: Sequence, *, first: bool = False) -> None:
        """Queue a sequence; ``first`` puts it ahead of the others (a conversation's next turn)."""
        entry = (seq, self.clock())
        if first:
            self.waiting.appendleft(entry)
        else:
            self.waiting.append(entry)

    def abort(self, seq: Sequence) -> bool:
        """Drop a waiting or running sequence (finish reason "abort"), freeing its slot
        and drafter state; False if it is not here (finished already)."""
        for i, (waiting, _) in enumerate(self.waiting):
            if waiting is seq:
                del self.waiting[i]
                seq.finish_reason = "abort"
                return True
        if seq in self.running:
            self.running.remove(seq)
            seq.finish_reason = "abort"
            seq.stats.wall_s = self.clock() - seq.started_at
            self.engine.finish(seq)
            return True
        return False

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> list[Sequence]:
        """Admit, run one step (decoding rows, drafts, prompt chunks), retire;
        returns the sequences that finished."""
        self._admit()
        engine = self.engine
        decoding = [s for s in self.running if engine.decoding(s)]
        budget = self.config.max_batched_tokens - len(decoding)
        prompts, chunks = [], []
        for seq in self.running:  # admission order: the oldest prompt is fed first
            if not engine.decoding(seq) and budget > 0:
                prompts.append(seq)
                chunks.append(min(engine.pending(seq), budget))
                budget -= chunks[-1]
        seqs = decoding + prompts
        if seqs:
            try:
                self._run(decoding, prompts, chunks)
            except Exception as exc:  # one bad step must not take down the others' requests
                self._fail(seqs, exc)
        finished = [s for s in self.running if s.finished]
        now = self.clock()
        for seq in finished:
            seq.stats.wall_s = now - seq.started_at
            engine.finish(seq, keep=seq.error is None)
        self.running = [s for s in self.running if not s.finished]
        return finished

    def _run(self, decoding: list[Sequence], prompts: list[Sequence], chunks: list[int]) -> None:
        engine = self.engine
        groups = group_by(decoding, lambda s: s.policy)
        ks = self._choose(decoding, groups, sum(chunks))
        start = self.clock()
        drafted, accepted = engine.step(decoding + prompts, [*ks, *[0] * len(prompts)], [1] * len(decoding) + chunks)
        target_s = self.clock() - start - sum(engine.last_draft_s.values())
        rows = engine.last_rows
        context = sum(len(s.token_ids) for s in decoding) + sum(engine.cache.lengths[s.slot] for s in prompts)
        self.step_log.append(StepSample(rows, len(decoding), len(prompts), context, target_s, sum(engine.last_draft_s.values())))
        for policy, idx in groups:
            group = [decoding[i] for i in idx]
            policy.observe(group, [drafted[i] for i in idx], [accepted[i] for i in idx], rows, target_s, engine.last_draft_s)

    def _choose(self, decoding: list[Sequence], groups: list[tuple[Policy, list[int]]], prompt_rows: int) -> list[int]:
        """K per decoding sequence: each policy decides for its own sequences, with the
        prompt rows, the other sequences' rows and drafts already chosen as given."""
        ks = [0] * len(decoding)
        decided = prompt_rows + len(decoding)
        for policy, idx in groups:
            group = [decoding[i] for i in idx]
            caps = [min(s.num_speculative_tokens, self.engine.max_draft(s)) if s.drafter is not None else 0 for s in group]
            for i, k in zip(idx, policy.choose(group, caps, base_rows=decided - len(group))):
                ks[i] = k
                decided += k
        return ks

    def _fail(self, seqs: Seq[Sequence], exc: Exception) -> None:
        self.failed_steps += 1
        log.error("a step over %d sequences failed; they end with an error", len(seqs), exc_info=exc)
        for seq in seqs:
            seq.error, seq.finish_reason = exc, "error"

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            seq, submitted = self.waiting.popleft()
            seq.started_at = self.clock()
            seq.stats.queue_s = seq.started_at - submitted
            self.engine.admit(seq)
            self.running.append(seq)

