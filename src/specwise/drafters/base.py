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


class Drafter(Protocol):
    name: str
    needs_features: bool
    """True if on_verified wants the target's last hidden states (EAGLE-style heads)."""

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
