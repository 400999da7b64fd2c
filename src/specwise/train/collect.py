"""Training data for draft networks: the target's own outputs and features.

The target answers a prompt pool with plain greedy decoding on the engine
loop (batched); a recorder in the drafter slot keeps
the final-normed hidden state of every position as the engine verifies it, so
the features cost no extra forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from specwise.drafters.base import Draft
from specwise.models.llama import LlamaModel
from specwise.prompts import Request
from specwise.sampling import SamplingParams
from specwise.sequence import Sequence

if TYPE_CHECKING:
    from specwise.api import LLM


@dataclass(slots=True)
class Sample:
    tokens: torch.Tensor
    """int64 [n]: prompt and answer."""
    num_prompt: int
    """Answer tokens start here; each is the target's greedy choice, so it is the
    label the drafts learn to predict."""
    features: torch.Tensor
    """fp16 [n - 1, hidden]: the target's normed hidden state at positions 0..n-2."""


class _Recorder:
    """A drafter that never drafts, only keeps the features the engine hands it."""

    name = "recorder"
    needs_features = True

    def __init__(self, model: LlamaModel, on_done: Callable[[int], None] | None) -> None:
        self.model, self.on_done = model, on_done
        self.parts: dict[Sequence, list[torch.Tensor]] = {}
        self.done: dict[int, Sample] = {}
        """By conversation index (sequences finish out of order)."""

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        return [Draft([]) for _ in seqs]

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        assert features is not None
        for seq, f in zip(seqs, features):
            self.parts.setdefault(seq, []).append(self.model.final_norm(f.contiguous()).half())

    def release(self, seq: Sequence) -> None:
        feats = torch.cat(self.parts.pop(seq))
        tokens = torch.tensor(seq.token_ids, dtype=torch.int64)
        self.done[int(seq.request_id)] = Sample(tokens, seq.num_prompt, feats[: len(tokens) - 1])
        if self.on_done:
            self.on_done(1)


def collect(
    llm: LLM,
    conversations: Seq[list[dict[str, str]]],
    max_tokens: int,
    concurrency: int = 16,
    on_done: Callable[[int], None] | None = None,
) -> list[Sample]:
    """Greedy answers to ``conversations`` (chat template applied) with their
    features, in the conversations' order (one that would not fit the context is left out)."""
    recorder = _Recorder(llm.model, on_done)
    requests = [
        Request(id=str(i), messages=messages)
        for i, messages in enumerate(conversations)
        if len(llm.encode_messages(messages, chat=True)) + max_tokens < llm.max_model_len
    ]
    llm.generate(requests, SamplingParams(max_tokens=max_tokens), concurrency=concurrency, drafter=recorder)
    return [recorder.done[i] for i in sorted(recorder.done)]
