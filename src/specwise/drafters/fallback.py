"""Chained drafters: each sequence takes the first proposal it gets.

``ngram+eagle`` drafts by prompt lookup where the output is copying its
input (long, nearly free, highly accepted drafts) and by the EAGLE head
everywhere else. Every drafter still sees every verification, so the ones
not used this step stay in sync.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq

import torch

from specwise.drafters.base import Draft, Drafter
from specwise.sequence import Sequence

Propose = Callable[[Drafter, Seq[Sequence], Seq[int]], list[Draft]]


def first_proposals(drafters: Seq[Drafter], seqs: Seq[Sequence], ks: Seq[int], propose: Propose | None = None) -> list[Draft]:
    """Each sequence's first non-empty proposal along the chain; a later drafter is asked
    only for the sequences still without one. ``propose`` lets ``auto`` reuse a shared
    drafter's proposals across the chains it scores, instead of asking twice a step."""
    ask = propose or (lambda d, s, k: d.propose(s, k))
    drafts = [Draft([]) for _ in seqs]
    left = list(ks)
    for drafter in drafters:
        idx = [i for i, k in enumerate(left) if k]
        if not idx:
            break
        for i, d in zip(idx, ask(drafter, [seqs[i] for i in idx], [left[i] for i in idx])):
            if d.tokens:
                drafts[i], left[i] = d, 0
    return drafts


class FallbackDrafter:
    def __init__(self, drafters: Seq[Drafter]) -> None:
        self.drafters = list(drafters)
        self.name = "+".join(d.name for d in self.drafters)
        self.needs_features = any(d.needs_features for d in self.drafters)
        self.reports_confidence = any(d.reports_confidence for d in self.drafters)

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        return first_proposals(self.drafters, seqs, ks)

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        for d in self.drafters:
            d.on_verified(seqs, features if d.needs_features else None)

    def release(self, seq: Sequence) -> None:
        for d in self.drafters:
            d.release(seq)
