"""Sampling parameters and the logits -> probabilities transform shared by target and drafts."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specwise.errors import SpecwiseError
from specwise.structured.constraint import Constraint


@dataclass(slots=True, frozen=True)
class SamplingParams:
    temperature: float = 0.0
    """0 means greedy (argmax); otherwise logits are divided by it."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches top_p (1 = off)."""
    top_k: int = 0
    """Keep the k most likely tokens (0 = off)."""
    max_tokens: int = 128
    """Upper bound on generated tokens."""
    stop: tuple[str, ...] = ()
    """Strings that end generation; they are not part of the returned text."""
    seed: int | None = None
    """Seed of the request's own generator, so a sampled run can be reproduced."""
    ignore_eos: bool = False
    """Keep generating past end-of-sequence tokens (benchmarks want fixed lengths)."""
    constraint: Constraint | None = None
    """What the output must match (JSON Schema, JSON object, regex, Lark grammar, choice)."""
    reasoning_end: str | None = None
    """With a constraint: text the model writes freely before it (the end of its reasoning);
    the constraint applies to what follows."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise SpecwiseError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SpecwiseError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise SpecwiseError(f"top_k must be >= 0, got {self.top_k}")
        if self.max_tokens < 1:
            raise SpecwiseError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if any(not s for s in self.stop):
            raise SpecwiseError("stop strings must be non-empty")
        if self.reasoning_end is not None and (not self.reasoning_end or self.constraint is None):
            raise SpecwiseError("a reasoning end must be non-empty text and needs a constraint to start after it")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits [N, V] -> probabilities [N, V] after temperature, top-k and top-p.

    Applied identically to target and draft logits, so rejection sampling
    compares the two distributions the user actually asked to sample from.
    """
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass strictly above each token
        sorted_probs = sorted_probs.masked_fill(before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from probs [V]."""
    return int(torch.multinomial(probs, 1, generator=generator))
