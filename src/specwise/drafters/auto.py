"""``auto``: the best drafter per traffic segment, measured on the traffic itself.

Code, chat and extraction want different drafters: one choice per model (the
machine calibration's) leaves speed on the table wherever a segment differs
from the calibration's prompts. This drafter keeps every candidate in step and
scores each on every step where it can: the free ones (suffix, prompt lookup
and their chain cost microseconds) propose every step, a drafter shared by
several chains once a step, and after verification each proposal is scored
by how many of its tokens the target emitted (for greedy decoding, exactly
what it would have had accepted). A
candidate with a model is scored on the steps it drafts, and tried again now
and then. Each segment drafts with its best candidate so far, and switches
when the measured figures say so.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import torch

from specwise.drafters.base import Draft, Drafter
from specwise.drafters.fallback import FallbackDrafter, first_proposals
from specwise.sequence import Sequence

FREE = ("ngram", "suffix")
"""Drafters whose proposals cost next to nothing: scored on every step."""


def is_free(drafter: Drafter) -> bool:
    return all(part in FREE for part in drafter.name.split("+"))


def _chain(drafter: Drafter) -> list[Drafter]:
    """The drafters a candidate is made of: a chain's parts, or itself."""
    return drafter.drafters if isinstance(drafter, FallbackDrafter) else [drafter]


@dataclass(slots=True)
class _Score:
    """Decayed mean of tokens a candidate's proposals got emitted, per step."""

    tokens: float = 0.0
    steps: float = 0.0

    def add(self, matched: int, decay: float) -> None:
        self.tokens = decay * self.tokens + matched
        self.steps = decay * self.steps + 1

    def mean(self, prior: float) -> float:
        return (self.tokens + prior) / (self.steps + 1)


@dataclass(slots=True)
class _Pending:
    length: int
    """len(token_ids) when the proposals were made."""
    proposals: dict[int, list[int]] = field(default_factory=dict)
    """Candidate index -> its proposal."""


class AutoDrafter:
    name = "auto"

    def __init__(self, candidates: Seq[Drafter], decay: float = 0.99, explore_every: int = 32) -> None:
        """Candidates may share drafters (``suffix``, ``ngram`` and ``suffix+ngram``): each
        shared one is told of every step and finished request once."""
        self.candidates = list(candidates)
        self._parts = list({id(p): p for d in self.candidates for p in _chain(d)}.values())
        self.needs_features = any(d.needs_features for d in self.candidates)
        self.reports_confidence = any(d.reports_confidence for d in self.candidates)
        self.decay, self.explore_every = decay, explore_every
        self.scores: dict[tuple[str, int], _Score] = {}
        """(segment, candidate index) -> its score there."""
        self._pending: dict[int, _Pending] = {}
        self._steps: dict[str, int] = {}

    def choices(self) -> dict[str, str]:
        """The candidate each segment drafts with now (for reports)."""
        return {segment: self.candidates[self._best(segment)].name for segment in self._steps}

    def _best(self, segment: str) -> int:
        means = [self._score(segment, i).mean(prior=0.5) for i in range(len(self.candidates))]
        return max(range(len(means)), key=lambda i: (means[i], -i))

    def _score(self, segment: str, i: int) -> _Score:
        return self.scores.setdefault((segment, i), _Score())

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        drafts = [Draft([]) for _ in seqs]
        chosen = []
        for seq in seqs:
            segment = seq.segment or ""
            step = self._steps[segment] = self._steps.get(segment, 0) + 1
            best = self._best(segment)
            models = [i for i, d in enumerate(self.candidates) if not is_free(d)]
            if models and step % self.explore_every == 0:  # give a model candidate its turn
                best = models[step // self.explore_every % len(models)]
            chosen.append(best)
        made: dict[tuple[int, int], Draft] = {}  # (id(part), id(seq)) -> its proposal this step

        def ask(part: Drafter, asked: Seq[Sequence], asked_ks: Seq[int]) -> list[Draft]:
            todo = [(s, k) for s, k in zip(asked, asked_ks) if (id(part), id(s)) not in made]
            if todo:
                for (s, _), d in zip(todo, part.propose([s for s, _ in todo], [k for _, k in todo])):
                    made[id(part), id(s)] = d
            return [made[id(part), id(s)] for s in asked]

        for i, drafter in enumerate(self.candidates):
            idx = [j for j, (c, k) in enumerate(zip(chosen, ks)) if k and (c == i or is_free(drafter))]
            if not idx:
                continue
            for j, draft in zip(idx, first_proposals(_chain(drafter), [seqs[j] for j in idx], [ks[j] for j in idx], ask)):
                pending = self._pending.setdefault(id(seqs[j]), _Pending(len(seqs[j].token_ids)))
                pending.length = len(seqs[j].token_ids)
                pending.proposals[i] = draft.tokens
                if chosen[j] == i:
                    drafts[j] = draft
        return drafts

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        for seq in seqs:
            pending = self._pending.pop(id(seq), None)
            if pending is None:
                continue
            emitted = seq.token_ids[pending.length :]
            for i, tokens in pending.proposals.items():
                matched = next((n for n, (a, b) in enumerate(zip(tokens, emitted)) if a != b), min(len(tokens), len(emitted)))
                self._score(seq.segment or "", i).add(matched, self.decay)
        for d in self._parts:
            d.on_verified(seqs, features if d.needs_features else None)

    def release(self, seq: Sequence) -> None:
        self._pending.pop(id(seq), None)
        for d in self._parts:
            d.release(seq)
