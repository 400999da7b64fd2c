"""The Python API: load a model once, generate for many requests.

``specwise generate`` is a thin layer over this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from specwise.drafters.base import Drafter
from specwise.drafters.ngram import NgramDrafter
from specwise.engine import Engine
from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.metrics import RequestStats
from specwise.models.default import default_model_path
from specwise.models.llama import LlamaModel
from specwise.models.loader import load_checkpoint
from specwise.models.tokenizer import Tokenizer
from specwise.prompts import Request
from specwise.sampling import SamplingParams
from specwise.sequence import Sequence

DRAFTERS = ("none", "ngram")


@dataclass(slots=True, frozen=True)
class SpeculativeConfig:
    drafter: str = "ngram"
    """"none" for plain decoding, or "ngram" (prompt lookup)."""
    num_speculative_tokens: int = 4
    """K: tokens drafted per step."""
    ngram_min: int = 1
    ngram_max: int = 3

    def __post_init__(self) -> None:
        if self.drafter not in DRAFTERS:
            raise SpecwiseError(f"unknown drafter {self.drafter!r} (choose from {', '.join(DRAFTERS)})")
        if self.num_speculative_tokens < 0:
            raise SpecwiseError(f"num_speculative_tokens must be >= 0, got {self.num_speculative_tokens}")
        NgramDrafter(self.ngram_min, self.ngram_max)  # validates the range

    def make_drafter(self) -> Drafter | None:
        if self.drafter == "none" or self.num_speculative_tokens == 0:
            return None
        return NgramDrafter(self.ngram_min, self.ngram_max)


@dataclass(slots=True)
class Result:
    id: str
    text: str
    """The answer (to the last turn, for multi-turn requests)."""
    token_ids: list[int]
    """Generated token ids, all turns in order."""
    finish_reason: str
    stats: RequestStats
    segment: str | None = None
    turn_texts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "text": self.text, "token_ids": self.token_ids}
        if len(self.turn_texts) > 1:
            out["turns"] = self.turn_texts
        if self.segment is not None:
            out["segment"] = self.segment
        out["finish_reason"] = self.finish_reason
        out["stats"] = self.stats.to_dict()
        return out


TextCallback = Callable[[str, str], None]
"""(request id, new text) as it is generated."""


class LLM:
    """A loaded target model with its tokenizer and a preallocated KV cache."""

    def __init__(self, model: str | Path | None = None, *, max_model_len: int = 2048) -> None:
        ckpt = load_checkpoint(model if model is not None else default_model_path())
        self.config = ckpt.config
        self.tokenizer = ckpt.tokenizer
        self.model = LlamaModel.from_checkpoint(ckpt)
        if max_model_len < 2:
            raise SpecwiseError(f"max_model_len must be >= 2, got {max_model_len}")
        self.max_model_len = min(max_model_len, self.config.max_position)
        self.cache = KVCache(self.config, num_slots=1, max_len=self.max_model_len)

    def encode_messages(self, messages: list[dict[str, str]], chat: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages) if chat else "\n".join(m["content"] for m in messages)
        return self.tokenizer.encode(text)

    def generate(
        self,
        requests: Iterable[Request | str],
        params: SamplingParams | None = None,
        spec: SpeculativeConfig | None = None,
        *,
        chat: bool = True,
        on_text: TextCallback | None = None,
    ) -> list[Result]:
        """Complete each request in turn (batch 1); ``spec=None`` decodes plainly."""
        params = params or SamplingParams()
        spec = spec or SpeculativeConfig(drafter="none")
        engine = Engine(self.model, self.tokenizer, self.cache, spec.make_drafter())
        reqs = [Request(id=str(i), prompt=r) if isinstance(r, str) else r for i, r in enumerate(requests)]
        return [self._complete(engine, r, params, spec.num_speculative_tokens, chat, on_text) for r in reqs]

    def _complete(
        self, engine: Engine, req: Request, params: SamplingParams, k: int, chat: bool, on_text: TextCallback | None
    ) -> Result:
        if req.turns is not None:
            conversation = [[{"role": "user", "content": t}] for t in req.turns]
        elif req.messages is not None:
            conversation = [req.messages]
        else:
            conversation = [[{"role": "user", "content": req.prompt or ""}]]
        history: list[dict[str, str]] = []
        stats = RequestStats()
        token_ids: list[int] = []
        texts: list[str] = []
        finish = "stop"
        for i, turn in enumerate(conversation):
            history += turn
            seed = None if params.seed is None else params.seed + i
            seq = self._run(engine, req.id, self.encode_messages(history, chat), params, k, seed, on_text)
            if i == 0:
                stats.ttft_s = seq.stats.ttft_s
            stats.merge(seq.stats)
            token_ids += seq.output_ids
            texts.append(seq.text)
            finish = seq.finish_reason or "stop"
            history.append({"role": "assistant", "content": seq.text})
        return Result(req.id, texts[-1], token_ids, finish, stats, req.segment, texts)

    def _run(
        self, engine: Engine, rid: str, prompt_ids: list[int], params: SamplingParams, k: int, seed: int | None, on_text: TextCallback | None
    ) -> Sequence:
        if len(prompt_ids) >= self.max_model_len:
            raise SpecwiseError(f"request {rid!r}: prompt of {len(prompt_ids)} tokens does not fit the context of {self.max_model_len}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        seq = Sequence(rid, list(prompt_ids), len(prompt_ids), params, generator=generator)
        stream = _Streamer(self.tokenizer, rid, on_text) if on_text else None
        start = time.perf_counter()
        try:
            engine.prefill([seq])
            while not seq.finished:
                if stream:
                    stream.update(seq)
                engine.step([seq], [k])
        finally:
            engine.finish(seq)
        seq.stats.wall_s = time.perf_counter() - start
        if stream:
            stream.update(seq)
        return seq


class _Streamer:
    """Emits newly decoded text, holding back an incomplete UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer, rid: str, callback: TextCallback) -> None:
        self.tokenizer, self.rid, self.callback, self.sent = tokenizer, rid, callback, 0

    def update(self, seq: Sequence) -> None:
        text = seq.text if seq.finished else self.tokenizer.decode(seq.output_ids)
        if not seq.finished:
            text = text.rstrip("\ufffd")
            # Hold back anything that could be the start of a stop string.
            longest = max((len(s) for s in seq.params.stop), default=1) - 1
            text = text[: max(self.sent, len(text) - longest)] if longest else text
        if len(text) > self.sent:
            self.callback(self.rid, text[self.sent :])
            self.sent = len(text)
