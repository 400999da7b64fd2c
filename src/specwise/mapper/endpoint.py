"""Any OpenAI-compatible HTTP endpoint as a mapper target: `specwise serve`, vLLM,
SGLang, llama.cpp's server.

Every request is a streamed chat completion, timed as its client sees it: the
first text chunk, the gaps between text chunks, the last one. A specwise
server takes the config per request (its ``speculation`` extension); the
others speculate as they were launched, so plain goes to a second endpoint
(``baseline_url``) and one speculative config to the first.

Acceptance comes from the server's Prometheus counters, scraped before and
after each run (specwise, vLLM, llama.cpp builds that count drafts, SGLang's
verify-step counter or its accept-length gauge), else from what each
response carries (specwise ``usage.speculative_decoding``, llama.cpp
``timings``).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from specwise.errors import SpecwiseError
from specwise.mapper.arrivals import arrival_times
from specwise.mapper.records import Acceptance, Load, MapConfig, Record, Run, WorkItem, first_turn
from specwise.structured.constraint import Constraint

KINDS = ("specwise", "vllm", "sglang", "llamacpp")
"""Servers told apart; anything else is "unknown" (sent plain OpenAI requests)."""

PROBE_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0

_COUNTER_SOURCES = {"specwise": "specwise /metrics", "vllm": "vllm /metrics", "llamacpp": "llama.cpp /metrics"}
"""Prefixes of vLLM-style draft counters (``PREFIX:spec_decode_num_draft_tokens_total`` ...)."""

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
"""Sample name -> {sorted labels: value}; a family's name too (no samples before its first count)."""


@dataclass(slots=True)
class _Server:
    url: str
    kind: str
    model: str


class EndpointTarget:
    """Replays a workload against an OpenAI-compatible endpoint (and a plain baseline)."""

    kind = "endpoint"

    def __init__(
        self,
        url: str,
        *,
        baseline_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``timeout_s``: the most one request may take; ``transport``: another way to reach the server (tests)."""
        self.url = _base(url)
        self.baseline_url = _base(baseline_url) if baseline_url else None
        self.timeout_s = timeout_s
        self.model = model or ""
        self.name = self.url
        self.server_kind = "unknown"
        """What answers at ``url``: specwise, vllm, sglang, llamacpp or unknown."""
        self.baseline_kind: str | None = None
        self._given_model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._servers: dict[str, _Server] = {}
        self._sent: dict[str, list[MapConfig]] = {}
        """Configs already run against each server that speculates as it was launched."""

    def probe(self) -> None:
        """Ask each URL for its models and metrics: the model name, and which server it is."""
        asyncio.run(self._probe())

    async def _probe(self) -> None:
        async with self._client(PROBE_TIMEOUT_S) as client:
            for url in filter(None, (self.url, self.baseline_url)):
                self._servers[url] = await self._probe_one(client, url)
        main = self._servers[self.url]
        self.model, self.server_kind = main.model, main.kind
        self.name = f"{main.kind} endpoint {main.url} ({main.model})"
        if self.baseline_url:
            base = self._servers[self.baseline_url]
            self.baseline_kind = base.kind
            self.name += f"; plain on {base.kind} {base.url} ({base.model})"

    async def _probe_one(self, client: httpx.AsyncClient, url: str) -> _Server:
        where = f"{url}/v1/models"
        try:
            response = await client.get(where)
        except httpx.HTTPError as exc:
            raise SpecwiseError(f"cannot reach the endpoint {url}: {_reason(exc, PROBE_TIMEOUT_S)}") from None
        if not response.is_success:
            raise SpecwiseError(f"{where} answered HTTP {response.status_code}: {_error_message(response)}")
        try:
            cards = response.json()["data"]
            ids = [str(card["id"]) for card in cards]
            owners = [str(card.get("owned_by", "")) for card in cards]
        except (ValueError, KeyError, TypeError):
            shown = _one_line(response.text) or "an empty body"
            raise SpecwiseError(f"{where} is not an OpenAI-compatible model list: {shown}") from None
        if not ids:
            raise SpecwiseError(f"{where} lists no models")
        model = self._given_model or ids[0]
        if model not in ids:
            raise SpecwiseError(f"{url} does not serve the model {model!r} (it serves {', '.join(ids)})")
        metrics = await _scrape(client, url)
        return _Server(url, _server_kind(owners[ids.index(model)], metrics), model)

    def check_configs(self, configs: Sequence[MapConfig]) -> None:
        """Refuse configs that one server launched with fixed speculation cannot tell apart."""
        if not self._servers:
            self.probe()
        for url, server in self._servers.items():
            if server.kind == "specwise":
                continue
            mine = list(dict.fromkeys(c for c in configs if self._destination(c) == url))
            speculative = [c.name for c in mine if c.speculates]
            launched = f"{url} ({server.kind}) speculates as it was launched, so it cannot serve both"
            if speculative and len(speculative) < len(mine):
                raise SpecwiseError(
                    f"{launched} plain and {speculative[0]}: pass a second one, without speculation, as --baseline-endpoint"
                )
            if len(speculative) > 1:
                raise SpecwiseError(f"{launched} {speculative[0]} and {speculative[1]}: map one speculative config per endpoint")

    def _destination(self, config: MapConfig) -> str:
        return self.baseline_url if self.baseline_url and not config.speculates else self.url

    def run(
        self,
        items: Sequence[WorkItem],
        config: MapConfig,
        load: Load,
        *,
        max_tokens: int,
        seed: int = 0,
        repeat: int = 0,
        on_record: Callable[[Record], None] | None = None,
    ) -> Run:
        """Send every item (closed or open loop) and record each as its client saw it."""
        if not self._servers:
            self.probe()
        server = self._servers[self._destination(config)]
        if server.kind != "specwise":
            self.check_configs([*self._sent.get(server.url, []), config])
            self._sent.setdefault(server.url, []).append(config)
        if load.concurrency is not None and load.concurrency < 1:
            raise SpecwiseError(f"concurrency must be >= 1, got {load.concurrency}")
        return asyncio.run(self._run(server, items, config, load, max_tokens, seed, repeat, on_record))

    async def _run(
        self, server: _Server, items: Sequence[WorkItem], config: MapConfig, load: Load, max_tokens: int, seed: int, repeat: int,
        on_record: Callable[[Record], None] | None,
    ) -> Run:  # fmt: skip
        times = arrival_times(items, load, seed)
        records: list[Record | None] = [None] * len(items)
        down = _Down()
        async with self._client(self.timeout_s) as client:
            before = await _scrape(client, server.url)
            start = time.perf_counter()

            async def send(i: int) -> None:
                record = await self._request(client, server, items[i], config, max_tokens, start, down)
                records[i] = record
                if on_record is not None:
                    on_record(record)

            if times is None:
                queue = iter(range(len(items)))

                async def worker() -> None:
                    for i in queue:  # one iterator shared by the workers: each takes the next item
                        await send(i)

                await asyncio.gather(*(worker() for _ in range(min(load.concurrency or 1, len(items)))))
            else:

                async def at(i: int, t: float) -> None:
                    await down.wait(start + t - time.perf_counter())  # a server gone away: fail now, not at t
                    await send(i)

                await asyncio.gather(*(at(i, t) for i, t in enumerate(times)))
            elapsed = time.perf_counter() - start
            after = await _scrape(client, server.url)
        done = [r for r in records if r is not None]
        return Run(config, load, done, elapsed, repeat, _acceptance(server.kind, before, after, done))

    def _client(self, timeout_s: float) -> httpx.AsyncClient:
        # no client-side queue (httpx's default pool holds 100): the load is the server's
        unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
        return httpx.AsyncClient(headers=self._headers, timeout=timeout, limits=unlimited, transport=self._transport)

    async def _request(
        self,
        client: httpx.AsyncClient,
        server: _Server,
        item: WorkItem,
        config: MapConfig,
        max_tokens: int,
        start: float,
        down: _Down,
    ) -> Record:
        sent = time.perf_counter()
        if down.reason is not None:
            return _failed(item, sent - start, 0.0, f"not sent: {down.reason}")
        reading = _Reading(sent)
        try:
            body = _body(server, item, config, max_tokens)
        except SpecwiseError as exc:  # a request this server cannot be asked
            return _failed(item, sent - start, 0.0, f"not sent: {exc}")
        try:
            async with asyncio.timeout(self.timeout_s):
                async with client.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
                    if not response.is_success:
                        await response.aread()
                        reason = f"HTTP {response.status_code}: {_error_message(response)}"
                        return _failed(item, sent - start, time.perf_counter() - sent, reason)
                    async for line in response.aiter_lines():
                        reading.feed(line, time.perf_counter())
                        if reading.error is not None or reading.done:
                            break
        except TimeoutError:
            reading.error = f"timed out after {self.timeout_s:g} s"
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            reading.error = _reason(exc, self.timeout_s)
            down.set(f"{server.url} is unreachable ({reading.error})")
        except httpx.HTTPError as exc:
            reading.error = _reason(exc, self.timeout_s)
        return reading.record(item, sent - start)


class _Down:
    """Why the server is unreachable, once a request found it so; waiters wake then."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._event = asyncio.Event()

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._event.set()

    async def wait(self, delay_s: float) -> None:
        """Sleep ``delay_s``, or less if the server goes down meanwhile."""
        if delay_s > 0:
            try:
                await asyncio.wait_for(self._event.wait(), delay_s)
            except TimeoutError:
                pass


@dataclass(slots=True)
class _Reading:
    """One streamed answer as it arrives: times of its text chunks, then usage and timings."""

    sent: float
    first: float | None = None
    last: float | None = None
    gaps: list[float] = field(default_factory=list)
    chunks: int = 0
    finish_reason: str | None = None
    usage: dict | None = None
    timings: dict | None = None
    error: str | None = None
    done: bool = False

    def feed(self, line: str, now: float) -> None:
        head, _, payload = line.partition(":")
        if head not in ("data", "error") or not payload.strip():
            return  # blank keep-alives, comments, event names
        payload = payload.strip()
        if payload == "[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(payload)
        except json.JSONDecodeError:
            self.error = f"not a JSON chunk in the stream: {_one_line(payload)}"
            return
        if not isinstance(obj, dict):
            self.error = f"not a JSON object in the stream: {_one_line(payload)}"
            return
        if head == "error" or obj.get("error") or obj.get("object") == "error":
            self.error = f"error in the stream: {_message_of(obj.get('error', obj)) or _one_line(payload)}"
            return
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") or {}
            text = (delta.get("content") or "") + (delta.get("reasoning_content") or delta.get("reasoning") or "")
            if text:
                if self.last is not None:
                    self.gaps.append(now - self.last)
                self.first = now if self.first is None else self.first
                self.last = now
                self.chunks += 1
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        if isinstance(obj.get("timings"), dict):
            self.timings = obj["timings"]

    def record(self, item: WorkItem, sent_s: float) -> Record:
        end = time.perf_counter()
        if self.error is None and self.finish_reason is None:
            self.error = "the stream ended before the answer finished (no finish_reason)"
        if self.error is not None:
            return _failed(item, sent_s, end - self.sent, self.error)
        usage = self.usage or {}
        first = self.first if self.first is not None else end
        last = self.last if self.last is not None else end
        record = Record(
            request_id=item.request.id, segment=item.segment, prompt_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or self.chunks), sent_s=sent_s, ttft_s=first - self.sent,
            latency_s=last - self.sent, chunk_gaps_s=self.gaps, finish_reason=self.finish_reason or "stop",
        )  # fmt: skip
        spec = usage.get("speculative_decoding")
        if isinstance(spec, dict):  # specwise
            record.drafted, record.accepted, record.steps = spec.get("drafted"), spec.get("accepted"), spec.get("steps")
            record.drafted_by_position = list(spec.get("drafted_by_position") or [])
            record.accepted_by_position = list(spec.get("accepted_by_position") or [])
        elif self.timings is not None and "draft_n" in self.timings:  # llama.cpp
            record.drafted, record.accepted = int(self.timings["draft_n"]), int(self.timings.get("draft_n_accepted") or 0)
        return record


def _failed(item: WorkItem, sent_s: float, elapsed_s: float, reason: str) -> Record:
    return Record(
        request_id=item.request.id, segment=item.segment, prompt_tokens=0, output_tokens=0, sent_s=sent_s, ttft_s=0.0,
        latency_s=elapsed_s, finish_reason="error", error=reason,
    )  # fmt: skip


def _body(server: _Server, item: WorkItem, config: MapConfig, max_tokens: int) -> dict[str, object]:
    request = item.request
    if request.messages is not None:
        messages = request.messages
    else:  # a prompt, or the first of several turns (an endpoint is sent no more)
        text = first_turn(request).prompt
        messages = [{"role": "user", "content": text}]
    body: dict[str, object] = {
        "model": server.model, "messages": messages, "stream": True, "stream_options": {"include_usage": True},
        "temperature": 0.0, "max_tokens": item.max_tokens or max_tokens,
    }  # fmt: skip
    if request.constraint is not None:
        body.update(_constraint_fields(request.constraint, server.kind))
    if server.kind == "specwise":
        body["speculation"] = _speculation(config)
        if request.segment:
            body["segment"] = re.sub(r"[^A-Za-z0-9_.:-]", "_", request.segment)[:64]  # the server refuses other characters
    return body


def _speculation(config: MapConfig) -> dict[str, object]:
    """specwise's per-request extension; a drafter or K left out is the server's default."""
    if not config.speculates:
        return {"drafter": "none"}
    spec: dict[str, object] = {"policy": config.policy}
    if config.drafter != "none":
        spec["drafter"] = config.drafter
    if config.num_speculative_tokens > 0:
        spec["num_speculative_tokens"] = config.num_speculative_tokens
    return spec


def _constraint_fields(c: Constraint, kind: str) -> dict[str, object]:
    """The request fields that ask for a constraint, as vLLM and specwise read them
    (llama-cpp-python takes a schema inside a json_object format, and no regex or choice)."""
    if kind == "llama-cpp-python":
        if c.kind not in ("json_schema", "json_object"):
            raise SpecwiseError(f"llama-cpp-python's server takes no {c.describe()} constraint")
        return {"response_format": {"type": "json_object", **({"schema": json.loads(c.text)} if c.kind == "json_schema" else {})}}
    if c.kind == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": json.loads(c.text)}}}
    if c.kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {"structured_outputs": {c.kind: json.loads(c.text) if c.kind == "choice" else c.text}}


def _server_kind(owned_by: str, metrics: Samples | None) -> str:
    owner = owned_by.lower().replace(".", "").replace("-", "").replace("_", "")
    if owner in KINDS:
        return owner
    if owner == "me":  # llama-cpp-python's cards say so
        return "llama-cpp-python"
    prefixes = {name.split(":", 1)[0] for name in metrics or {} if ":" in name}
    return next((kind for kind in KINDS if kind in prefixes), "unknown")


async def _scrape(client: httpx.AsyncClient, url: str) -> Samples | None:
    """The server's Prometheus samples, or None where it has no readable /metrics."""
    try:
        response = await client.get(f"{url}/metrics")
        if not response.is_success:
            return None
        samples: Samples = {}
        for family in text_string_to_metric_families(response.text):
            samples.setdefault(family.name, {})
            for sample in family.samples:
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return samples
    except (httpx.HTTPError, ValueError):  # unreachable, or not Prometheus text
        return None


def _acceptance(kind: str, before: Samples | None, after: Samples | None, records: Sequence[Record]) -> Acceptance | None:
    """The run's drafts from the server's counters, else summed from its responses."""
    if before is not None and after is not None:
        found = _from_counters(before, after) if kind != "sglang" else _from_sglang(before, after, records)
        if found is not None:
            return found
    reported = [r for r in records if r.ok and r.drafted is not None]
    if not reported:
        return None
    by_position: list[int] = []
    for r in reported:
        by_position += [0] * (len(r.accepted_by_position) - len(by_position))
        for pos, n in enumerate(r.accepted_by_position):
            by_position[pos] += n
    source = "specwise usage" if kind == "specwise" else "llama.cpp timings"
    return Acceptance(sum(r.drafted or 0 for r in reported), sum(r.accepted or 0 for r in reported), by_position, source)


def _delta(before: Samples, after: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float] | None:
    """Each series' growth over the run (None: the server has no such series, or it restarted)."""
    if name not in after:
        return None
    prior = before.get(name, {})
    grown = {labels: value - prior.get(labels, 0.0) for labels, value in after[name].items()}
    return None if any(v < 0 for v in grown.values()) else grown


def _total(before: Samples, after: Samples, name: str) -> float | None:
    grown = _delta(before, after, name)
    return None if grown is None else sum(grown.values())


def _from_counters(before: Samples, after: Samples) -> Acceptance | None:
    for prefix, source in _COUNTER_SOURCES.items():
        drafted = _total(before, after, f"{prefix}:spec_decode_num_draft_tokens_total")
        accepted = _total(before, after, f"{prefix}:spec_decode_num_accepted_tokens_total")
        if drafted is None or accepted is None:
            continue
        by_position: list[int] = []
        for labels, n in (_delta(before, after, f"{prefix}:spec_decode_num_accepted_tokens_per_pos_total") or {}).items():
            pos = int(dict(labels).get("position", -1))
            if pos >= 0:
                by_position += [0] * (pos + 1 - len(by_position))
                by_position[pos] += round(n)
        return Acceptance(round(drafted), round(accepted), by_position, source)
    return None


def _gauge(after: Samples, name: str) -> float | None:
    values = list(after.get(name, {}).values())
    return sum(values) / len(values) if values else None


def _from_sglang(before: Samples, after: Samples, records: Sequence[Record]) -> Acceptance | None:
    """SGLang counts verify steps but not drafts: each step emits its accepted drafts and
    one more token, and each request's first token comes from its prefill. Without the
    step counter, its accept-length gauge (tokens per step, a mean over the last
    logging interval) stands in. Drafts = steps x the drafts per step it reports."""
    ok = [r for r in records if r.ok]
    steps = _total(before, after, "sglang:spec_verify_calls_total")
    if steps is not None:
        if steps == 0:
            return Acceptance(0, 0, [], "sglang /metrics (no verify steps)")
        generated = _total(before, after, "sglang:generation_tokens_total")
        requests = _total(before, after, "sglang:num_requests_total")
        generated = generated if generated is not None else sum(r.output_tokens for r in ok)
        accepted = generated - steps - (requests if requests is not None else len(ok))
        how = "accepted = generated tokens - verify steps - requests"
    else:
        length = _gauge(after, "sglang:spec_accept_length")
        if not length:
            return None
        decoded = sum(max(r.output_tokens - 1, 0) for r in ok)
        steps = decoded / length
        accepted = decoded - steps
        how = "verify steps = the responses' tokens after the first / the accept-length gauge at the run's end; approximate"
    accepted = max(round(accepted), 0)
    per_step = _gauge(after, "sglang:spec_num_steps")
    if per_step is None and (tree := _gauge(after, "sglang:spec_num_draft_tokens")) is not None:
        per_step = tree - 1  # the tree's root is the verified token, not a draft
    if per_step:
        return Acceptance(
            round(steps * per_step), accepted, [], f"sglang /metrics ({how}; drafted = verify steps x drafts per step)"
        )
    rate = _gauge(after, "sglang:spec_accept_rate")
    if rate:
        return Acceptance(
            round(accepted / rate), accepted, [], f"sglang /metrics ({how}; drafted = accepted / accept-rate gauge)"
        )
    return None


def _reason(exc: BaseException, timeout_s: float) -> str:
    """One line on why a request to the server failed."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout_s:g} s"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"unknown host ({cause.strerror})"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
        return f"connection dropped ({_one_line(str(exc)) or type(exc).__name__})"
    return _one_line(str(exc)) or type(exc).__name__


def _error_message(response: httpx.Response) -> str:
    """The message of an error answer (OpenAI's {"error": {"message"}}, or its text)."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text) or response.reason_phrase
    message = _message_of(body.get("error", body)) if isinstance(body, dict) else ""
    return message or _one_line(response.text)


def _message_of(error: object) -> str:
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or ""
    return _one_line(str(error)) if error else ""


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _base(url: str) -> str:
    """The server's root: users paste ``.../v1`` as often as not."""
    url = url.rstrip("/")
    url = url.removesuffix("/v1")
    return url if "://" in url else f"http://{url}"
