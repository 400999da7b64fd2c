"""Forced tokens as drafts: where the grammar allows one continuation only (a JSON
key, punctuation, a closing bracket), that run is a draft the target cannot
reject, so it costs a verify row instead of a step.

First in a chain (``grammar+ngram``): a sequence with a forced run drafts it;
the others (and unconstrained sequences) fall through to the next drafter.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from specwise.drafters.base import Draft
from specwise.sequence import Sequence


class GrammarDrafter:
    name = "grammar"
    needs_features = False
    reports_confidence = False

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        drafts = []
        for seq, k in zip(seqs, ks):
            tokens = seq.grammar.forced()[:k] if seq.grammar is not None and k else []
            drafts.append(Draft(tokens, forced=len(tokens)))
        return drafts

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        pass

    def release(self, seq: Sequence) -> None:
        pass


def forces(drafter: object) -> bool:
    """True if the drafter (or chain) proposes the grammar's forced tokens."""
    return "grammar" in getattr(drafter, "name", "").split("+")
