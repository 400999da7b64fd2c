"""State of one request being decoded."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import torch

from specwise.metrics import RequestStats
from specwise.sampling import SamplingParams

if TYPE_CHECKING:
    from specwise.drafters.base import Drafter
    from specwise.policy import Policy
    from specwise.structured.grammar import GrammarState


@dataclass(slots=True, eq=False)
class Sequence:
    """Tokens so far (prompt + generated) and where they live in the KV cache.

    Between steps the cache slot holds the sequence's first ``cache.lengths[slot]``
    tokens: part of the prompt while it is fed in chunks, then every token but
    the last, which is fed as the first row of the next step.
    """

    request_id: str
    token_ids: list[int]
    num_prompt: int
    params: SamplingParams
    segment: str | None = None
    """Traffic segment label (acceptance is tracked per segment)."""
    drafter: Drafter | None = None
    """Who drafts for this sequence; None decodes plainly. Sequences with different
    drafters (or none) share one step."""
    policy: Policy | None = None
    """How far it speculates each step (None: plain)."""
    num_speculative_tokens: int = 0
    """The most drafts it takes in one step."""
    grammar: GrammarState | None = None
    """The matcher of the request's constraint (None: unconstrained)."""
    slot: int = -1
    started_at: float = 0.0
    """perf_counter() at admission (a slot was free; its prompt starts being fed)."""
    generator: torch.Generator | None = None
    stats: RequestStats = field(default_factory=RequestStats)
    finish_reason: str | None = None
    """None while running; then "stop" (EOS or stop string), "length", "abort"
    (cancelled by its caller) or "error" (its step failed: see ``error``)."""
    error: BaseException | None = None
    text: str = ""
    """Decoded output, cut before a stop string; final once finished."""

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt :]

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


T = TypeVar("T")


def group_by(seqs: Seq[Sequence], key: Callable[[Sequence], T | None]) -> list[tuple[T, list[int]]]:
    """Indices of the sequences that share each (identical) key object, in order of
    first appearance; sequences whose key is None belong to no group."""
    groups: dict[int, tuple[T, list[int]]] = {}
    for i, seq in enumerate(seqs):
        value = key(seq)
        if value is not None:
            groups.setdefault(id(value), (value, []))[1].append(i)
    return list(groups.values())
