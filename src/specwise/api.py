"""The Python API: load a model once, generate for many requests.

``specwise generate`` is a thin layer over this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from specwise.costs import step_cost_model
from specwise.drafters.base import Drafter
from specwise.drafters.factory import DrafterFactory, parse_drafter
from specwise.drafters.ngram import NgramDrafter
from specwise.engine import Engine
from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.loop import EngineLoop
from specwise.metrics import RequestStats
from specwise.models.default import default_model_path
from specwise.models.llama import LlamaModel
from specwise.models.loader import load_checkpoint
from specwise.policy import AdaptivePolicy, FixedPolicy, Policy
from specwise.prompts import Request
from specwise.sampling import SamplingParams
from specwise.scheduler import Scheduler, SchedulerConfig
from specwise.sequence import Sequence
from specwise.structured.grammar import GrammarCompiler
from specwise.text_stream import TextStream
from specwise.threads import in_passing_thread

POLICIES = ("fixed", "adaptive")
MAX_SPECULATIVE_TOKENS = 32
"""The most drafts a request may ask for per step (the shared policy tracks this many positions)."""


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
    forced_tokens: bool = True
    """Constrained requests draft the grammar's forced tokens ahead of the drafter
    (``grammar+ngram`` for ``ngram``); off, the drafter alone drafts."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise SpecwiseError(f"unknown policy {self.policy!r} (choose from {', '.join(POLICIES)})")
        parse_drafter(self.drafter)
        if self.draft_vocab < 0:
            raise SpecwiseError(f"draft_vocab must be >= 0, got {self.draft_vocab}")
        if not 0 <= self.num_speculative_tokens <= MAX_SPECULATIVE_TOKENS:
            raise SpecwiseError(f"num_speculative_tokens must be in 0..{MAX_SPECULATIVE_TOKENS}, got {self.num_speculative_tokens}")
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
    """A loaded target model with its tokenizer, KV cache and the engine loop that
    serves every request made of it (``generate`` here, the HTTP server, the mapper)."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        max_model_len: int = 2048,
        max_batched_tokens: int = 256,
        max_num_seqs: int = 1,
        weights: str = "auto",
        quantize: str | None = None,
    ) -> None:
        """``max_batched_tokens``: rows per step before drafts (decoding sequences plus
        prompt chunks); raised to concurrency + 1 where it is smaller. ``max_num_seqs``:
        KV cache slots to allocate now (``generate`` grows them on demand). ``weights``:
        auto runs a GGUF's quantized matrices as stored, fp32 dequantizes them;
        ``quantize`` (q8_0, q4_0, q4_1) quantizes what is still fp32 at load."""
        if max_model_len < 2:
            raise SpecwiseError(f"max_model_len must be >= 2, got {max_model_len}")
        if max_batched_tokens < 2:
            raise SpecwiseError(f"max_batched_tokens must be >= 2, got {max_batched_tokens}")
        if max_num_seqs < 1:
            raise SpecwiseError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        ckpt = in_passing_thread(lambda: load_checkpoint(model if model is not None else default_model_path(), weights, quantize))
        self.source = ckpt.source
        self.weight_format = ckpt.weight_format
        """What the matrices run as ("fp32", "q4_1+q8_0"...)."""
        self.config = ckpt.config
        self.tokenizer = ckpt.tokenizer
        self.model = in_passing_thread(lambda: LlamaModel.from_checkpoint(ckpt))
        self.max_model_len = min(max_model_len, self.config.max_position)
        self.max_batched_tokens = max_batched_tokens
        cache = in_passing_thread(lambda: KVCache(self.config, num_slots=max_num_seqs, max_len=self.max_model_len))
        self.loop = EngineLoop(Scheduler(Engine(self.model, self.tokenizer, cache), self._scheduler_config(max_num_seqs)))
        self.drafters = DrafterFactory(self)
        self.grammars = GrammarCompiler(self.tokenizer.file.read_text(encoding="utf-8"), self.config.vocab_size, sorted(self.tokenizer.eos_token_ids))
        """Matchers for constrained requests, on the target's tokenizer."""
        self._drafters: dict[tuple[str, int, int, int, bool], Drafter] = {}
        self._policies: dict[str, Policy] = {}
        self._generating = threading.Lock()

    @property
    def model_key(self) -> str:
        """Names the model and its weight format: step costs and drafter calibrations
        are measured per key, since quantized rows cost differently."""
        return f"{self.source}:{self.weight_format}"

    @property
    def cache(self) -> KVCache:
        return self.loop.scheduler.engine.cache

    def _scheduler_config(self, max_num_seqs: int) -> SchedulerConfig:
        return SchedulerConfig(max_num_seqs, max(self.max_batched_tokens, max_num_seqs + 1))

    def configure(self, max_num_seqs: int) -> None:
        """Decode up to ``max_num_seqs`` sequences together from now on, growing the KV
        cache if it has fewer slots (only while the loop is idle; drafters with caches
        of their own are rebuilt for the new slots)."""
        if max_num_seqs < 1:
            raise SpecwiseError(f"concurrency must be >= 1, got {max_num_seqs}")
        sched = self.loop.scheduler
        config = self._scheduler_config(max_num_seqs)
        if config == sched.config and self.cache.num_slots >= max_num_seqs:
            return
        if not self.loop.wait_idle(timeout=5.0):
            raise SpecwiseError("the engine is serving requests; its batch size can only change while it is idle")
        if self.cache.num_slots < max_num_seqs:
            sched.engine.cache = in_passing_thread(lambda: KVCache(self.config, num_slots=max_num_seqs, max_len=self.max_model_len))
            self._drafters.clear()
        sched.config = config

    def encode_messages(self, messages: list[dict[str, str]], chat: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages) if chat else "\n".join(m["content"] for m in messages)
        return self.tokenizer.encode(text)

    def reset_prefix_cache(self) -> None:
        """Forget the prompts that earlier calls left in the cache. Runs compared side
        by side must start alike: otherwise the second finds the first one's prompts
        cached and skips feeding them."""
        self.cache.forget()

    def forget_traffic(self) -> None:
        """Forget what drafters learned from earlier requests (the suffix store, auto's
        choice per segment), like ``reset_prefix_cache`` for the KV cache: runs
        compared side by side must start alike."""
        self.drafters.suffix_store.clear()
        self._drafters.clear()

    def make_policy(self, spec: SpeculativeConfig) -> Policy:
        """A fresh policy that has learned nothing yet (benchmarks compare runs that
        start alike); the adaptive one starts from the cached step-cost profile."""
        if not spec.speculates:
            return FixedPolicy(0)
        if spec.policy == "fixed":
            return FixedPolicy(MAX_SPECULATIVE_TOKENS)
        costs = in_passing_thread(lambda: step_cost_model(self.model, self.model_key))  # may profile the model
        return AdaptivePolicy(costs, max_k=MAX_SPECULATIVE_TOKENS)

    def policy(self, spec: SpeculativeConfig) -> Policy | None:
        """The loop's own policy of this kind, which lives and learns as long as the loop
        (None for plain decoding). A sequence's K caps what it drafts."""
        if not spec.speculates:
            return None
        if spec.policy not in self._policies:
            self._policies[spec.policy] = self.make_policy(spec)
        return self._policies[spec.policy]

    @property
    def adaptive_policy(self) -> AdaptivePolicy | None:
        """The shared adaptive policy, once a request has used it (for metrics)."""
        policy = self._policies.get("adaptive")
        return policy if isinstance(policy, AdaptivePolicy) else None

    def drafter(self, spec: SpeculativeConfig, *, constrained: bool = False) -> Drafter | None:
        """The drafter a spec names, built once for this cache and kept (None for plain);
        for constrained requests, with the grammar's forced tokens first if the spec wants them."""
        if not spec.speculates:
            return None
        forced = constrained and spec.forced_tokens
        key = (spec.drafter, spec.ngram_min, spec.ngram_max, spec.draft_vocab, forced)
        if key not in self._drafters:
            self._drafters[key] = in_passing_thread(lambda: self.drafters.build(spec, self.cache, forced=forced))
        return self._drafters[key]

    def sequence(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        spec: SpeculativeConfig | None = None,
        *,
        segment: str | None = None,
        policy: Policy | None = None,
        drafter: Drafter | None = None,
        generator: torch.Generator | None = None,
    ) -> Sequence:
        """A sequence ready to submit to the loop: its prompt must fit the context, and
        it carries its own drafter, policy and K. ``policy`` overrides the shared one;
        ``drafter`` the one the spec names (with a plain spec it only watches: it sees
        every verified position and its features, as the training collector needs)."""
        if len(prompt_ids) >= self.max_model_len:
            raise SpecwiseError(f"request {request_id!r}: prompt of {len(prompt_ids)} tokens does not fit the context of {self.max_model_len}")
        spec = spec or SpeculativeConfig(drafter="none")
        seq = Sequence(request_id, list(prompt_ids), len(prompt_ids), params, segment=segment, generator=generator)
        if params.constraint is not None:
            seq.grammar = self.grammars.state(params.constraint, params.reasoning_end)
        seq.drafter = drafter or self.drafter(spec, constrained=params.constraint is not None)
        if spec.speculates:
            seq.policy, seq.num_speculative_tokens = policy or self.policy(spec), spec.num_speculative_tokens
        return seq

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
        drafter: Drafter | None = None,
        on_text: TextCallback | None = None,
    ) -> list[Result]:
        """Complete every request, ``concurrency`` at a time (continuous batching), on
        the engine loop.

        ``spec=None`` decodes plainly. ``arrivals`` (seconds from the start, one per
        request) holds a request back until its time, to replay traffic. Results come
        back in request order. ``params`` is one for all requests or one per request.
        ``policy`` replaces the loop's shared one for these requests, ``drafter`` the
        one the spec names (see ``sequence``).
        """
        spec = spec or SpeculativeConfig(drafter="none")
        reqs = [Request(id=str(i), prompt=r) if isinstance(r, str) else r for i, r in enumerate(requests)]
        per_request = [params or SamplingParams()] * len(reqs) if not isinstance(params, Seq) else list(params)
        if len(per_request) != len(reqs):
            raise SpecwiseError(f"{len(per_request)} sampling parameter sets for {len(reqs)} requests")
        per_request = [p if r.constraint is None else replace(p, constraint=r.constraint) for r, p in zip(reqs, per_request)]
        if arrivals is not None and len(arrivals) != len(reqs):
            raise SpecwiseError(f"{len(arrivals)} arrival times for {len(reqs)} requests")
        if drafter is None:
            # Built (and, for auto, calibrated: that decodes too) before this run holds the
            # engine: a calibration started inside the run would wait for it forever.
            self.drafter(spec)
        with self._generating:
            self.configure(concurrency)
            make = lambda ids, req, p, gen: self.sequence(req.id, ids, p, spec, segment=req.segment, policy=policy, drafter=drafter, generator=gen)  # noqa: E731
            convs = [_Conversation(self, r, p, chat, make) for r, p in zip(reqs, per_request)]
            for conv in convs:
                conv.check_first_turn()
            order = sorted(range(len(convs)), key=lambda i: arrivals[i] if arrivals else 0.0)
            run = _Run(self.loop, [convs[i] for i in order], [arrivals[i] for i in order] if arrivals else None, on_text)
            run.wait()
        return [c.result() for c in convs]


class _Run:
    """One ``generate`` call on the loop: submits each conversation at its arrival
    time and its next turns as earlier ones finish, and waits for all of them; on
    an error or an interrupt it aborts what is left before returning."""

    def __init__(self, loop: EngineLoop, convs: list[_Conversation], arrivals: list[float] | None, on_text: TextCallback | None) -> None:
        self.loop, self.convs, self.arrivals, self.on_text = loop, convs, arrivals, on_text
        self.cond = threading.Condition()
        self.owner: dict[Sequence, tuple[_Conversation, TextStream | None]] = {}
        self.live: set[Sequence] = set()
        self.done = 0
        self.error: BaseException | None = None

    def _start(self, conv: _Conversation, seq: Sequence, first: bool = False) -> None:
        with self.cond:
            self.owner[seq] = (conv, TextStream(conv.llm.tokenizer) if self.on_text else None)
            self.live.add(seq)
        self.loop.submit(seq, self._on_tokens, first=first)

    def _on_tokens(self, seq: Sequence, new: list[int]) -> None:
        """In the loop thread."""
        conv, stream = self.owner[seq]
        if stream is not None and (text := stream.update(seq)):
            self.on_text(conv.request.id, text)  # type: ignore[misc]  (a stream exists only with on_text)
        if not seq.finished:
            return
        nxt = None
        if seq.finish_reason == "error":
            self.error = self.error or seq.error
        elif seq.finish_reason != "abort" and conv.finish_turn(seq) and self.error is None:
            nxt = conv.next_turn()
        if nxt is not None:
            self._start(conv, nxt, first=True)
        with self.cond:
            self.live.discard(seq)
            del self.owner[seq]
            if nxt is None and seq.finish_reason != "abort":
                self.done += 1
            self.cond.notify_all()

    def wait(self) -> None:
        start = time.perf_counter()
        pending = list(self.convs)
        try:
            while True:
                now = time.perf_counter() - start
                while pending and (self.arrivals is None or self.arrivals[len(self.convs) - len(pending)] <= now):
                    conv = pending.pop(0)
                    seq = conv.next_turn()
                    assert seq is not None  # the first turn was checked to fit
                    self._start(conv, seq)
                with self.cond:
                    if self.error is not None or self.done == len(self.convs):
                        break
                    timeout = None if not pending or self.arrivals is None else self.arrivals[len(self.convs) - len(pending)] - now
                    self.cond.wait(timeout)
        except BaseException:
            self._abort_all()
            raise
        if self.error is not None:
            self._abort_all()
            raise self.error

    def _abort_all(self) -> None:
        with self.cond:
            for seq in list(self.live):
                self.loop.abort(seq)
            while self.live:
                self.cond.wait()


SequenceMaker = Callable[[list[int], Request, SamplingParams, "torch.Generator | None"], Sequence]


class _Conversation:
    """One request's turns: each answered in order, the answer joining the history."""

    def __init__(self, llm: LLM, request: Request, params: SamplingParams, chat: bool, make: SequenceMaker) -> None:
        self.llm, self.request, self.params, self.chat, self.make = llm, request, params, chat, make
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
        return self.make(ids, self.request, self.params, generator)

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
