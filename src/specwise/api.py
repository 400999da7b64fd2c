"""The Python API: load a model once, generate for many requests.

``specwise generate`` is a thin layer over this.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path

import torch

from specwise.drafters.factory import DrafterFactory, parse_drafter
from specwise.drafters.ngram import NgramDrafter
from specwise.costs import step_cost_model
from specwise.engine import Engine
from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.metrics import RequestStats
from specwise.models.default import default_model_path
from specwise.models.llama import LlamaModel
from specwise.models.loader import load_checkpoint
from specwise.models.tokenizer import Tokenizer
from specwise.policy import AdaptivePolicy, FixedPolicy, Policy
from specwise.prompts import Request
from specwise.sampling import SamplingParams
from specwise.scheduler import Scheduler, SchedulerConfig
from specwise.sequence import Sequence

POLICIES = ("fixed", "adaptive")


@dataclass(slots=True, frozen=True)
class SpeculativeConfig:
    drafter: str = "ngram"
    """"none" (plain decoding), "ngram" (prompt lookup), "draft:PATH" (a draft model),
    "layerskip[:LAYERS]" (the target's own first layers, or a chosen set),
    "eagle[:PATH]" (an EAGLE-style head) or "auto" (the best one measured here)."""
    num_speculative_tokens: int = 4
    """K: tokens drafted per step."""
    ngram_min: int = 2
    ngram_max: int = 3
    policy: str = "fixed"
    """"fixed" drafts K every step; "adaptive" picks K per sequence and step (0..K)
    from measured acceptance and step cost."""
    draft_vocab: int = 0
    """Learned drafters choose among this many most frequent tokens (0 = all)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise SpecwiseError(f"unknown policy {self.policy!r} (choose from {', '.join(POLICIES)})")
        parse_drafter(self.drafter)
        if self.draft_vocab < 0:
            raise SpecwiseError(f"draft_vocab must be >= 0, got {self.draft_vocab}")
        if self.num_speculative_tokens < 0:
            raise SpecwiseError(f"num_speculative_tokens must be >= 0, got {self.num_speculative_tokens}")
        NgramDrafter(self.ngram_min, self.ngram_max)  # validates the range

    @property
    def speculates(self) -> bool:
        return self.drafter != "none" and self.num_speculative_tokens > 0


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

    def __init__(self, model: str | Path | None = None, *, max_model_len: int = 2048, max_batched_tokens: int = 256) -> None:
        """``max_batched_tokens``: rows per step before drafts (decoding sequences plus
        prompt chunks); raised to concurrency + 1 where it is smaller."""
        if max_model_len < 2:
            raise SpecwiseError(f"max_model_len must be >= 2, got {max_model_len}")
        if max_batched_tokens < 2:
            raise SpecwiseError(f"max_batched_tokens must be >= 2, got {max_batched_tokens}")
        ckpt = load_checkpoint(model if model is not None else default_model_path())
        self.source = ckpt.source
        self.config = ckpt.config
        self.tokenizer = ckpt.tokenizer
        self.model = LlamaModel.from_checkpoint(ckpt)
        self.max_model_len = min(max_model_len, self.config.max_position)
        self.max_batched_tokens = max_batched_tokens
        self.cache = KVCache(self.config, num_slots=1, max_len=self.max_model_len)
        self.drafters = DrafterFactory(self)

    def encode_messages(self, messages: list[dict[str, str]], chat: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages) if chat else "\n".join(m["content"] for m in messages)
        return self.tokenizer.encode(text)

    def reset_prefix_cache(self) -> None:
        """Forget the prompts that earlier calls left in the cache. Runs compared side
        by side must start alike: otherwise the second finds the first one's prompts
        cached and skips feeding them."""
        self.cache.forget()

    def make_policy(self, spec: SpeculativeConfig) -> Policy:
        """A fresh policy; the adaptive one starts from the cached step-cost profile."""
        if not spec.speculates:
            return FixedPolicy(0)
        if spec.policy == "fixed":
            return FixedPolicy(spec.num_speculative_tokens)
        return AdaptivePolicy(step_cost_model(self.model, str(self.source)), max_k=spec.num_speculative_tokens)

    def generate(
        self,
        requests: Iterable[Request | str],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        spec: SpeculativeConfig | None = None,
        *,
        chat: bool = True,
        concurrency: int = 1,
        arrivals: Seq[float] | None = None,
        policy: Policy | None = None,
        on_text: TextCallback | None = None,
    ) -> list[Result]:
        """Complete every request, ``concurrency`` at a time (continuous batching).

        ``spec=None`` decodes plainly. ``arrivals`` (seconds from the start, one per
        request) holds a request back until its time, to replay traffic. Results come
        back in request order. ``params`` is one for all requests or one per request.
        """
        spec = spec or SpeculativeConfig(drafter="none")
        reqs = [Request(id=str(i), prompt=r) if isinstance(r, str) else r for i, r in enumerate(requests)]
        per_request = [params or SamplingParams()] * len(reqs) if not isinstance(params, Seq) else list(params)
        if len(per_request) != len(reqs):
            raise SpecwiseError(f"{len(per_request)} sampling parameter sets for {len(reqs)} requests")
        if arrivals is not None and len(arrivals) != len(reqs):
            raise SpecwiseError(f"{len(arrivals)} arrival times for {len(reqs)} requests")
        if concurrency < 1:
            raise SpecwiseError(f"concurrency must be >= 1, got {concurrency}")
        convs = [_Conversation(self, r, p, chat) for r, p in zip(reqs, per_request)]
        for conv in convs:
            conv.check_first_turn()
        if self.cache.num_slots < concurrency:
            self.cache = KVCache(self.config, num_slots=concurrency, max_len=self.max_model_len)
        drafter = self.drafters.build(spec, self.cache) if spec.speculates else None
        engine = Engine(self.model, self.tokenizer, self.cache, drafter)
        sched = Scheduler(engine, policy or self.make_policy(spec), SchedulerConfig(concurrency, max(self.max_batched_tokens, concurrency + 1)))
        order = sorted(range(len(convs)), key=lambda i: arrivals[i] if arrivals else 0.0)
        owner: dict[int, _Conversation] = {}
        streams = {id(c): _Streamer(self.tokenizer, c.request.id, on_text) for c in convs} if on_text else {}
        start = time.perf_counter()
        try:
            while order or sched.has_work():
                now = time.perf_counter() - start
                while order and (arrivals is None or arrivals[order[0]] <= now):
                    conv = convs[order.pop(0)]
                    seq = conv.next_turn()
                    assert seq is not None  # the first turn was checked to fit
                    owner[id(seq)] = conv
                    sched.submit(seq)
                if not sched.has_work():
                    time.sleep(max(0.0, arrivals[order[0]] - now) if arrivals else 0.0)
                    continue
                for seq in sched.step():
                    conv = owner.pop(id(seq))
                    if streams:
                        streams[id(conv)].update(seq)
                    if conv.finish_turn(seq) and (nxt := conv.next_turn()) is not None:
                        owner[id(nxt)] = conv
                        sched.submit(nxt, first=True)
                for seq in sched.running:
                    if streams:
                        streams[id(owner[id(seq)])].update(seq)
        finally:
            for seq in sched.running:
                engine.finish(seq)
        return [c.result() for c in convs]


class _Conversation:
    """One request's turns: each answered in order, the answer joining the history."""

    def __init__(self, llm: LLM, request: Request, params: SamplingParams, chat: bool) -> None:
        self.llm, self.request, self.params, self.chat = llm, request, params, chat
        if request.turns is not None:
            self.turns = [[{"role": "user", "content": t}] for t in request.turns]
        elif request.messages is not None:
            self.turns = [request.messages]
        else:
            self.turns = [[{"role": "user", "content": request.prompt or ""}]]
        self.history: list[dict[str, str]] = []
        self.stats = RequestStats()
        self.token_ids: list[int] = []
        self.texts: list[str] = []
        self.finish_reason = "stop"

    def _prompt(self, turn: int) -> list[int]:
        ids = self.llm.encode_messages([*self.history, *self.turns[turn]], self.chat)
        if len(ids) >= self.llm.max_model_len:
            raise SpecwiseError(
                f"request {self.request.id!r}: prompt of {len(ids)} tokens does not fit the context of {self.llm.max_model_len}"
            )
        return ids

    def check_first_turn(self) -> None:
        """Fail before any work starts, not halfway through a batch."""
        self._prompt(0)

    def next_turn(self) -> Sequence | None:
        """The next turn's sequence; None when the history has outgrown the context
        (the conversation then ends with finish reason "length", like a long answer)."""
        turn = len(self.texts)
        try:
            ids = self._prompt(turn)
        except SpecwiseError:
            if not turn:
                raise
            self.finish_reason = "length"
            return None
        self.history += self.turns[turn]
        seed = None if self.params.seed is None else self.params.seed + turn
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return Sequence(self.request.id, ids, len(ids), self.params, segment=self.request.segment, generator=generator)

    def finish_turn(self, seq: Sequence) -> bool:
        """Record a finished turn; True if another turn follows."""
        if not self.texts:
            self.stats.ttft_s = seq.stats.ttft_s
        self.stats.merge(seq.stats)
        self.token_ids += seq.output_ids
        self.texts.append(seq.text)
        self.finish_reason = seq.finish_reason or "stop"
        self.history.append({"role": "assistant", "content": seq.text})
        return len(self.texts) < len(self.turns)

    def result(self) -> Result:
        return Result(self.request.id, self.texts[-1] if self.texts else "", self.token_ids, self.finish_reason, self.stats, self.request.segment, self.texts)


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
