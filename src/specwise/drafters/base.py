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


class Drafter(Protocol):
    name: str

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        """Up to ks[i] tokens continuing seqs[i].token_ids (batched, one call per step)."""
        ...

    def on_verified(self, seqs: Seq[Sequence]) -> None:
        """Called after the step's tokens were appended, to resync any drafter state."""
        ...

    def release(self, seq: Sequence) -> None:
        """The sequence finished; free what the drafter holds for it."""
        ...
