"""State of one request being decoded."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from specwise.metrics import RequestStats
from specwise.sampling import SamplingParams


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
    slot: int = -1
    started_at: float = 0.0
    """perf_counter() at admission (a slot was free; its prompt starts being fed)."""
    generator: torch.Generator | None = None
    stats: RequestStats = field(default_factory=RequestStats)
    finish_reason: str | None = None
    """None while running; then "stop" (EOS or stop string) or "length"."""
    text: str = ""
    """Decoded output, cut before a stop string; final once finished."""

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt :]

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
