"""The OpenAI-compatible HTTP API over the engine loop.

Handlers run on uvicorn's event loop; the engine runs on its own thread. A
request becomes one ``Sequence`` submitted to the loop with a listener that
turns each step's tokens into a text delta (in the loop thread, which owns
the sequence) and hands it to the request's asyncio queue. Metrics are
counted by the same listener, so a request is counted whether or not its
client stayed to read the answer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from specwise.api import LLM, MAX_SPECULATIVE_TOKENS, SpeculativeConfig
from specwise.errors import SpecwiseError
from specwise.sampling import SamplingParams
from specwise.sequence import Sequence
from specwise.server.metrics import ServerMetrics
from specwise.server.protocol import APIError, ChatCompletionRequest, CompletionRequest, Segment, Speculation
from specwise.text_stream import TextStream

log = logging.getLogger("specwise")


@dataclass(slots=True, frozen=True)
class ServeConfig:
    model: str | None = None
    """GGUF file or Hugging Face directory (None: the shipped default)."""
    weights: str = "auto"
    quantize: str | None = None
    drafters: tuple[str, ...] = ("ngram",)
    """Loaded at start; the first serves requests that name none. ("none",): plain only."""
    policy: str = "adaptive"
    num_speculative_tokens: int = 4
    max_num_seqs: int = 8
    max_model_len: int = 2048
    max_batched_tokens: int = 256
    max_queue: int = 256
    """Requests allowed to wait for a slot; beyond them new ones get 429."""
    api_key: str | None = None
    served_model_name: str | None = None
    ngram_min: int = 2
    ngram_max: int = 3
    draft_vocab: int = 0

    def __post_init__(self) -> None:
        if not self.drafters:
            raise SpecwiseError("give at least one drafter (or none)")
        if "none" in self.drafters and len(self.drafters) > 1:
            raise SpecwiseError("'none' cannot be loaded beside other drafters: requests can always ask for no speculation")
        if self.max_queue < 0:
            raise SpecwiseError(f"max_queue must be >= 0, got {self.max_queue}")
        for name in self.drafters:  # validate names and numbers before anything loads
            self.spec(name)

    def spec(self, drafter: str) -> SpeculativeConfig:
        k = self.num_speculative_tokens if drafter != "none" else 0
        return SpeculativeConfig(drafter, k, self.ngram_min, self.ngram_max, self.policy, self.draft_vocab)


@dataclass(slots=True)
class _Tracked:
    """One request in flight: the queue its deltas go to, and its timings."""

    seq: Sequence
    stream: TextStream
    queue: asyncio.Queue[tuple[str, str | None]] = field(default_factory=asyncio.Queue)
    arrival: float = field(default_factory=time.perf_counter)
    last_token: float | None = None
    ended: bool = False


class _Outbox:
    """Deltas from the engine thread to the event loop, one wake-up per step however
    many requests got tokens in it (each wake-up costs the HTTP side a syscall and a
    loop turn, taken from the two cores the kernels run on)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.items: list[tuple[_Tracked, str, str | None]] = []

    def put(self, t: _Tracked, delta: str, reason: str | None) -> None:
        with self.lock:
            self.items.append((t, delta, reason))
            wake = len(self.items) == 1
        if wake:
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self.lock:
            items, self.items = self.items, []
        for t, delta, reason in items:
            t.queue.put_nowait((delta, reason))


class Server:
    """What the endpoints share: the engine once loaded, the metrics, the config."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.llm: LLM | None = None
        self.load_error: str | None = None
        self.draining = False
        self.metrics = ServerMetrics(positions=max(config.num_speculative_tokens, 1))
        self.model_name = config.served_model_name or ""
        self._outbox: _Outbox | None = None

    def load(self, llm: LLM | None = None) -> None:
        """Load the model (or take ``llm``, loaded already), every drafter and the
        policies' cost profile; the server answers 503 until this is done."""
        c = self.config
        if llm is None:
            llm = LLM(
                c.model, max_model_len=c.max_model_len, max_batched_tokens=c.max_batched_tokens, max_num_seqs=c.max_num_seqs, weights=c.weights, quantize=c.quantize
            )
        llm.configure(c.max_num_seqs)
        for name in c.drafters:
            llm.drafter(c.spec(name))
        if c.drafters != ("none",):
            for policy in ("fixed", "adaptive"):
                llm.policy(replace(c.spec(c.drafters[0]), policy=policy))
        self.metrics.bind(llm)
        self.model_name = self.model_name or Path(str(llm.source)).stem
        self.llm = llm

    def ready(self) -> LLM:
        if self.draining:
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
        if self.llm is None:
            raise APIError(503, "the model is loading; retry when /health answers 200", type="server_error", code="model_loading")
        return self.llm

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {self.model_name!r}", param="model", code="model_not_found")

    def speculation(self, s: Speculation | None) -> SpeculativeConfig:
        c = self.config
        drafter = (s.drafter if s is not None and s.drafter is not None else None) or c.drafters[0]
        if drafter == "none":
            return SpeculativeConfig("none", 0)
        if drafter not in c.drafters:
            loaded = ", ".join(d for d in c.drafters if d != "none") or "no drafter"
            raise APIError(400, f"drafter {drafter!r} is not loaded (this server loaded {loaded}; or ask for 'none')", param="speculation.drafter")
        k = s.num_speculative_tokens if s is not None and s.num_speculative_tokens is not None else c.num_speculative_tokens
        if k > MAX_SPECULATIVE_TOKENS:
            raise APIError(400, f"num_speculative_tokens must be <= {MAX_SPECULATIVE_TOKENS}, got {k}", param="speculation.num_speculative_tokens")
        policy = s.policy if s is not None and s.policy is not None else c.policy
        return replace(c.spec(drafter), num_speculative_tokens=k, policy=policy)

    def sampling(self, body: ChatCompletionRequest | CompletionRequest, prompt_len: int, llm: LLM, param: str) -> SamplingParams:
        limit = llm.max_model_len
        room = limit - prompt_len
        if room <= 0:
            raise APIError(
                400, f"This model's maximum context length is {limit} tokens; the prompt has {prompt_len}.", param=param, code="context_length_exceeded"
            )
        budget = body.token_budget()
        if budget is not None and budget > room:
            raise APIError(
                400,
                f"This model's maximum context length is {limit} tokens; you requested {prompt_len + budget} "
                f"({prompt_len} in the prompt, {budget} for the completion).",
                param="max_tokens",
                code="context_length_exceeded",
            )
        try:
            return SamplingParams(
                temperature=body.temperature, top_p=body.top_p, top_k=max(body.top_k, 0), max_tokens=budget or room,
                stop=body.stops(), seed=body.seed, ignore_eos=body.ignore_eos,
                constraint=body.constraint(), reasoning_end=body.reasoning_end,
            )  # fmt: skip
        except SpecwiseError as exc:
            raise APIError(400, str(exc)) from None

    def submit(self, request: Request, body: ChatCompletionRequest | CompletionRequest, ids: list[int], param: str) -> _Tracked:
        """Everything a client can get wrong is checked before the loop sees the request."""
        llm = self.ready()
        params = self.sampling(body, len(ids), llm, param)
        spec = self.speculation(body.speculation)
        segment = body.segment or _header_segment(request)
        c = self.config
        if llm.loop.num_running + llm.loop.num_waiting >= c.max_num_seqs + c.max_queue:
            raise APIError(429, f"the server is at capacity ({c.max_queue} requests waiting); retry later", type="rate_limit_error", code="queue_full")
        generator = torch.Generator().manual_seed(body.seed) if body.seed is not None else None
        try:
            seq = llm.sequence(uuid.uuid4().hex, ids, params, spec, segment=segment, generator=generator)
        except SpecwiseError as exc:  # a constraint the tokenizer-bound matcher refuses
            raise APIError(400, str(exc), param="response_format") from None
        if self._outbox is None:
            self._outbox = _Outbox(asyncio.get_running_loop())
        tracked, outbox = _Tracked(seq, TextStream(llm.tokenizer)), self._outbox
        llm.loop.submit(seq, lambda s, new: self._on_tokens(tracked, new, outbox))
        return tracked

    def _on_tokens(self, t: _Tracked, new: list[int], outbox: _Outbox) -> None:
        """In the engine thread: the text delta and the metrics, then a hand-off to the client's queue."""
        seq, now = t.seq, time.perf_counter()
        delta = t.stream.update(seq)
        if new:
            if t.last_token is None:
                self.metrics.first_token(now - t.arrival)
                self.metrics.tokens(len(new) - 1, 0.0)
            else:
                self.metrics.tokens(len(new), now - t.last_token)
            t.last_token = now
        if seq.finished:
            self.metrics.ended(seq, t.arrival, now)
        outbox.put(t, delta, seq.finish_reason)

    def abort(self, t: _Tracked) -> None:
        if not t.ended and self.llm is not None:
            self.llm.loop.abort(t.seq)


_SEGMENT = TypeAdapter(Segment)


def _header_segment(request: Request) -> str | None:
    value = request.headers.get("x-segment")
    if value is None:
        return None
    try:
        return _SEGMENT.validate_python(value)
    except ValidationError:
        raise APIError(400, "X-Segment must be 1-64 characters of letters, digits and _ . : -", param="X-Segment") from None


def _token_ids(body: ChatCompletionRequest | CompletionRequest, t: _Tracked) -> dict[str, object]:
    """The generated ids, when asked for with ``return_token_ids`` (as vLLM offers)."""
    return {"token_ids": t.seq.output_ids} if body.return_token_ids else {}


def _usage(seq: Sequence) -> dict[str, object]:
    s = seq.stats
    return {
        "prompt_tokens": seq.num_prompt,
        "completion_tokens": len(seq.output_ids),
        "total_tokens": seq.num_prompt + len(seq.output_ids),
        "prompt_tokens_details": {"cached_tokens": s.cached_tokens},
        "speculative_decoding": {
            "num_drafts": s.num_drafts,
            "drafted": s.drafted,
            "accepted": s.accepted,
            "acceptance_rate": round(s.acceptance_rate, 4),
            "mean_acceptance_length": round(s.mean_accepted_per_step + 1, 4),
            "accepted_by_position": list(s.accepted_by_position),
            "drafted_by_position": list(s.drafted_by_position),
            "steps": s.steps,
            "forced_tokens": s.forced_tokens,
        },
    }


async def _collect(request: Request, server: Server, t: _Tracked) -> tuple[str, str]:
    """Wait for the whole answer, aborting it if the client goes away meanwhile."""
    parts: list[str] = []
    while True:
        try:
            delta, reason = await asyncio.wait_for(t.queue.get(), timeout=0.5)
        except TimeoutError:
            if await request.is_disconnected():
                server.abort(t)
            continue
        parts.append(delta)
        if reason is not None:
            t.ended = True
            return "".join(parts), reason


def _ended_badly(t: _Tracked, reason: str) -> APIError | None:
    if reason == "error":
        return APIError(500, f"the engine failed on this request: {t.seq.error}", type="server_error", code="engine_error")
    if reason == "abort":
        return APIError(503, "the request was cancelled: the server is shutting down", type="server_error", code="aborted")
    return None


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _sse(data: object) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass(slots=True, frozen=True)
class _Shape:
    """How one endpoint's answers look: the whole answer, and its stream of chunks."""

    prefix: str
    object: str
    chunk_object: str
    opening: dict[str, object] | None
    """A first chunk before any text (chat names the role there)."""
    piece: Callable[[str], dict[str, object]]
    """A chunk's text."""
    whole: Callable[[str], dict[str, object]]
    """The whole answer's text."""


_CHAT = _Shape(
    "chatcmpl", "chat.completion", "chat.completion.chunk", {"delta": {"role": "assistant", "content": ""}},
    piece=lambda text: {"delta": {"content": text} if text else {}},
    whole=lambda text: {"message": {"role": "assistant", "content": text}},
)  # fmt: skip
_COMPLETION = _Shape("cmpl", "text_completion", "text_completion", None, piece=lambda text: {"text": text}, whole=lambda text: {"text": text})


class _Answer:
    """One response's identity and the bodies it is made of."""

    def __init__(self, server: Server, t: _Tracked, shape: _Shape) -> None:
        self.t, self.shape = t, shape
        self.head = {"id": f"{shape.prefix}-{t.seq.request_id}", "created": int(time.time()), "model": server.model_name}

    def chunk(self, text_part: dict[str, object], reason: str | None) -> dict[str, object]:
        choice = {"index": 0, **text_part, "logprobs": None, "finish_reason": reason}
        return {**self.head, "object": self.shape.chunk_object, "choices": [choice]}

    def usage_chunk(self) -> dict[str, object]:
        return {**self.head, "object": self.shape.chunk_object, "choices": [], "usage": _usage(self.t.seq)}

    def whole(self, text: str, reason: str, body: ChatCompletionRequest | CompletionRequest) -> dict[str, object]:
        choice = {"index": 0, **self.shape.whole(text), "logprobs": None, "finish_reason": reason, **_token_ids(body, self.t)}
        return {**self.head, "object": self.shape.object, "choices": [choice], "usage": _usage(self.t.seq)}


async def _stream(server: Server, answer: _Answer, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: deltas as the engine verifies them, the finish reason, the
    usage if asked, then [DONE]. A client that goes away aborts the request."""
    t, shape = answer.t, answer.shape
    try:
        if shape.opening is not None:
            yield _sse(answer.chunk(shape.opening, None))
        while True:
            delta, reason = await t.queue.get()
            error = _ended_badly(t, reason) if reason is not None else None
            if delta and error is None:
                yield _sse(answer.chunk(shape.piece(delta), None))
            if reason is not None:
                t.ended = True
                break
        if error is not None:
            yield _sse(error.body())
        else:
            yield _sse(answer.chunk(shape.piece(""), reason))
            if include_usage:
                yield _sse(answer.usage_chunk())
        yield "data: [DONE]\n\n"
    finally:
        server.abort(t)


async def _respond(server: Server, request: Request, body: ChatCompletionRequest | CompletionRequest, t: _Tracked, shape: _Shape) -> Response:
    """A stream of chunks, or the whole answer once it is done."""
    answer = _Answer(server, t, shape)
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(server, answer, include), media_type="text/event-stream", headers=_SSE_HEADERS)
    try:
        text, reason = await _collect(request, server, t)
    finally:
        server.abort(t)
    if (error := _ended_badly(t, reason)) is not None:
        raise error
    return JSONResponse(answer.whole(text, reason, body))


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="specwise", summary="OpenAI-compatible API with per-request speculative decoding")

    async def authorize(request: Request) -> None:
        key = server.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), key.encode())):
            raise APIError(401, "missing or wrong API key: send Authorization: Bearer KEY", code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @v1.get("/models")
    async def models() -> dict[str, object]:
        llm = server.ready()
        card = {"id": server.model_name, "object": "model", "created": 0, "owned_by": "specwise", "max_model_len": llm.max_model_len}
        return {"object": "list", "data": [card]}

    @v1.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        llm = server.ready()
        server.check_model(body.model)
        body.unsupported()
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        try:
            ids = llm.encode_messages(messages, chat=True)
        except SpecwiseError as exc:
            raise APIError(400, str(exc), param="messages") from None
        return await _respond(server, request, body, server.submit(request, body, ids, "messages"), _CHAT)

    @v1.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        llm = server.ready()
        server.check_model(body.model)
        body.unsupported()
        prompt = body.prompt[0] if isinstance(body.prompt, list) and isinstance(body.prompt[0], (str, list)) else body.prompt
        if isinstance(prompt, str):
            ids = llm.tokenizer.encode(prompt)
            if not ids:
                raise APIError(400, "the prompt is empty", param="prompt")
        else:
            ids = list(prompt)  # type: ignore[arg-type]
            if not ids or min(ids) < 0 or max(ids) >= llm.config.vocab_size:
                raise APIError(400, f"prompt token ids must be in 0..{llm.config.vocab_size - 1}", param="prompt")
        return await _respond(server, request, body, server.submit(request, body, ids, "prompt"), _COMPLETION)

    app.include_router(v1)

    @app.get("/health")
    async def health() -> Response:
        if server.llm is None or server.draining:
            return JSONResponse({"status": "shutting down" if server.draining else "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        message = f"{where}: {first['msg']}" if where else f"the request body must be a JSON object ({first['msg']})"
        return JSONResponse(APIError(400, message, param=where or None).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(APIError(exc.status_code, str(exc.detail), type=kind).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def bug(_: Request, exc: Exception) -> Response:
        log.error("unhandled error in a request", exc_info=exc)
        return JSONResponse(APIError(500, f"internal error: {exc}", type="server_error").body(), status_code=500)

    return app
