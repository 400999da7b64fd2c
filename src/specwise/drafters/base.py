"""The drafter interface: the engine knows drafters only through this."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Protocol

import torch

from specwise.sequence import Sequence


@dataclass(slots=True)
class Draft:
    tokens: list[int]
    """Proposed continuation (may be shorter than asked, even empty)."""
    probs: torch.Tensor | None = None
    """[len(tokens), V] draft distribution for rejection sampling; None = deterministic."""
    forced: int = 0
    """Leading tokens the grammar forces (the only ones it allows): certain, and counted
    apart from the drafter's own guesses."""
    confidence: list[float] | None = None
    """The drafter's probability of each token (a suffix count's frequency, a model's q
    of its own token); the adaptive policy calibrates it against what is accepted."""

    def cut(self, n: int) -> Draft:
        """The first n tokens, with what belongs to them."""
        probs = self.probs[:n] if self.probs is not None else None
        confidence = self.confidence[:n] if self.confidence is not None else None
        return Draft(self.tokens[:n], probs, min(self.forced, n), confidence)


class Drafter(Protocol):
    name: str
    needs_features: bool
    """True if on_verified wants the target's last hidden states (EAGLE-style heads)."""
    reports_confidence: bool
    """True if its drafts carry a confidence per token: the adaptive policy then lets
    it draft up to the sequence's K and cuts each draft where its calibrated
    confidence stops paying for the rows."""

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        """Up to ks[i] tokens continuing seqs[i].token_ids (batched, one call per step)."""
        ...

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        """Called after every step, to resync drafter state.

        ``features[i]`` (only for drafters that need them) holds the target's
        pre-norm hidden states [n, hidden] at the n positions of seqs[i] that the
        target has just verified: the prompt chunk fed this step, or the fed
        token and the accepted drafts."""
        ...

    def release(self, seq: Sequence) -> None:
        """The sequence finished; free what the drafter holds for it."""
        ...
