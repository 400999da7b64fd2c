"""`specwise map` against an OpenAI-compatible endpoint: fake servers of each kind
(specwise, vLLM, SGLang, llama.cpp) answering in-process with timed chunks, and
one real `specwise serve` (slow)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from specwise.errors import SpecwiseError
from specwise.mapper.arrivals import arrival_times
from specwise.mapper.endpoint import EndpointTarget
from specwise.mapper.records import Load, MapConfig, WorkItem
from specwise.prompts import Request
from specwise.structured.constraint import Constraint

PLAIN = MapConfig("plain", "plain")
FIXED = MapConfig("fixed", "fixed", "ngram", 4)
ADAPTIVE = MapConfig("adaptive", "adaptive", "ngram", 4)


class StreamingASGI(httpx.AsyncBaseTransport):
    """An ASGI app as a server: httpx's own ASGITransport holds the body back until the
    app has finished, which would put every chunk at the end; this one hands each body
    part on as the app sends it, so the chunk times are the app's."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1", "method": request.method,
            "scheme": request.url.scheme, "path": request.url.path, "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query, "root_path": "", "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (request.url.host, request.url.port or 80), "client": ("127.0.0.1", 50000),
        }  # fmt: skip
        parts: asyncio.Queue[bytes | None] = asyncio.Queue()
        started: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never goes away on its own
            raise AssertionError

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                parts.put_nowait(message.get("body", b""))
                if not message.get("more_body", False):
                    parts.put_nowait(None)

        task = asyncio.create_task(self.app(scope, receive, send))
        task.add_done_callback(lambda _: parts.put_nowait(None))
        await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            raise httpx.RemoteProtocolError(f"the app failed before answering: {task.exception()!r}")
        start = started.result()
        return httpx.Response(start["status"], headers=start.get("headers", []), stream=_Body(parts, task))


class _Body(httpx.AsyncByteStream):
    def __init__(self, parts: asyncio.Queue[bytes | None], task: asyncio.Task) -> None:
        self.parts, self.task = parts, task

    async def __aiter__(self):
        while (part := await self.parts.get()) is not None:
            yield part
        await asyncio.sleep(0)  # let a failing app's task finish
        if self.task.done() and not self.task.cancelled() and self.task.exception() is not None:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def aclose(self) -> None:
        self.task.cancel()


class Router(httpx.AsyncBaseTransport):
    """Several fake servers, by host."""

    def __init__(self, **hosts: httpx.AsyncBaseTransport) -> None:
        self.hosts = hosts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.hosts[request.url.host].handle_async_request(request)


class Dying(httpx.AsyncBaseTransport):
    """A server that stops accepting connections after ``alive`` chat requests."""

    def __init__(self, inner: httpx.AsyncBaseTransport, alive: int) -> None:
        self.inner, self.alive, self.posts = inner, alive, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.posts += 1
        if self.posts > self.alive:
            raise httpx.ConnectError("All connection attempts failed") from ConnectionRefusedError(111, "Connection refused")
        return await self.inner.handle_async_request(request)


def _sse(obj: object) -> str:
    return f"data: {json.dumps(obj)}\n\n"


@dataclass
class Fake:
    """An OpenAI-compatible server of one kind. Each answer: a role chunk, ``first_s``,
    then min(max_tokens, tokens) text chunks ``gap_s`` apart, the finish, the usage.
    Every answer after its first token drafts 2 per token and accepts 1 per token, as
    its kind reports it. Prompts containing fail / streamerror / drop go wrong."""

    kind: str = "specwise"
    tokens: int = 4
    first_s: float = 0.06
    gap_s: float = 0.03
    owned_by: str | None = None
    models_status: int = 200
    sglang_counters: bool = True
    bodies: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = self.kind
        if p in ("specwise", "vllm"):
            labels = ["segment"] if p == "specwise" else ["model_name", "engine"]
            self.drafted = Counter(f"{p}:spec_decode_num_draft_tokens", "", labels, registry=r)
            self.accepted = Counter(f"{p}:spec_decode_num_accepted_tokens", "", labels, registry=r)
            self.per_pos = Counter(f"{p}:spec_decode_num_accepted_tokens_per_pos", "", [*labels, "position"], registry=r)
        if p == "sglang":
            self.generated = Counter("sglang:generation_tokens", "", ["model_name"], registry=r)
            self.requests = Counter("sglang:num_requests", "", ["model_name"], registry=r)
            if self.sglang_counters:
                self.verify = Counter("sglang:spec_verify_calls", "", ["model_name"], registry=r)
            Gauge("sglang:spec_num_steps", "", ["model_name"], registry=r).labels("m").set(2)
            Gauge("sglang:spec_accept_length", "", ["model_name"], registry=r).labels("m").set(1.5)

    def transport(self) -> StreamingASGI:
        routes = [
            Route("/v1/models", self.models),
            Route("/metrics", self.metrics),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
        ]
        return StreamingASGI(Starlette(routes=routes))

    async def models(self, _: HTTPRequest) -> Response:
        if self.models_status != 200:
            return JSONResponse({"error": {"message": "no such route"}}, status_code=self.models_status)
        return JSONResponse(
            {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": self.owned_by or self.kind}, {"id": "other"}]}
        )

    async def metrics(self, _: HTTPRequest) -> Response:
        if self.kind == "llamacpp":
            return JSONResponse({"error": {"message": "metrics are disabled"}}, status_code=501)
        return PlainTextResponse(generate_latest(self.registry).decode())

    async def chat(self, request: HTTPRequest) -> Response:
        body = await request.json()
        self.bodies.append(body)
        prompt = body["messages"][-1]["content"]
        if "fail" in prompt:
            return JSONResponse({"error": {"message": "boom\n  on two lines", "type": "server_error"}}, status_code=500)
        speculating = self.kind != "specwise" or body["speculation"].get("drafter") != "none"
        n = min(body["max_tokens"], self.tokens)
        head = {"id": "x", "object": "chat.completion.chunk", "model": "m"}

        async def stream():
            yield _sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            await asyncio.sleep(self.first_s)
            for i in range(n):
                if i == 2 and "streamerror" in prompt:
                    yield _sse({"error": {"message": "the engine failed", "code": 500}})
                    return
                if i == 2 and "drop" in prompt:
                    raise RuntimeError("the server went away")
                yield _sse({**head, "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]})
                if i < n - 1:
                    await asyncio.sleep(self.gap_s)
            yield _sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            yield _sse({**head, "choices": [], **self._count(body, n, speculating)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    def _count(self, body: dict, n: int, speculating: bool) -> dict:
        """Count the answer in /metrics; its last chunk's usage (and timings, as llama.cpp's)."""
        decoded = n - 1
        drafted, accepted = (2 * decoded, decoded) if speculating else (0, 0)
        by_pos = [accepted - accepted // 2, accepted // 2]
        usage: dict = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
        if self.kind in ("specwise", "vllm"):
            labels = [body.get("segment", "default")] if self.kind == "specwise" else ["m", "0"]
            self.drafted.labels(*labels).inc(drafted)
            self.accepted.labels(*labels).inc(accepted)
            for pos, k in enumerate(by_pos):
                self.per_pos.labels(*labels, str(pos)).inc(k)
        if self.kind == "specwise":
            usage["speculative_decoding"] = {
                "num_drafts": decoded, "drafted": drafted, "accepted": accepted, "accepted_by_position": by_pos,
                "drafted_by_position": [drafted // 2, drafted // 2], "steps": decoded, "forced_tokens": 0,
            }  # fmt: skip
        if self.kind == "llamacpp":
            return {"usage": usage, "timings": {"predicted_n": n, "draft_n": drafted, "draft_n_accepted": accepted}}
        if self.kind == "sglang":  # chains of 2 drafts: each step emits its accepted drafts and one more
            self.generated.labels("m").inc(n)
            self.requests.labels("m").inc()
            if self.sglang_counters:
                self.verify.labels("m").inc((decoded + 1) // 2)
        return {"usage": usage}


def items(*prompts: str, segment: str | None = None, **kwargs) -> list[WorkItem]:
    return [WorkItem(Request(id=str(i), prompt=p, segment=segment), **kwargs) for i, p in enumerate(prompts)]


def target(fake: Fake, **kwargs) -> EndpointTarget:
    return EndpointTarget("http://fake", transport=fake.transport(), **kwargs)


def test_probe_learns_model_and_kind():
    for kind in ("specwise", "vllm", "sglang", "llamacpp"):
        t = target(Fake(kind))
        t.probe()
        assert (t.model, t.server_kind) == ("m", kind)
        assert kind in t.name and "http://fake" in t.name
    t = target(Fake("vllm", owned_by="someone"), model="other")
    t.probe()
    assert (t.model, t.server_kind) == ("other", "vllm")  # told by its /metrics names


def test_records_time_each_chunk_and_read_usage():
    fake = Fake(tokens=4, first_s=0.06, gap_s=0.03)
    run = target(fake).run(items("a", "b", "c"), FIXED, Load(concurrency=1), max_tokens=16)
    assert [r.request_id for r in run.records] == ["0", "1", "2"]
    for r in run.records:
        assert r.ok, r.error
        assert (r.output_tokens, r.prompt_tokens, r.finish_reason) == (4, 7, "length")
        assert 0.06 <= r.ttft_s < 0.06 + 0.15
        assert len(r.chunk_gaps_s) == 3 and all(0.025 <= g < 0.03 + 0.1 for g in r.chunk_gaps_s)
        assert r.latency_s == pytest.approx(r.ttft_s + sum(r.chunk_gaps_s), abs=0.01)
        assert (r.drafted, r.accepted, r.accepted_by_position, r.drafted_by_position, r.steps) == (6, 3, [2, 1], [3, 3], 3)
    acc = run.acceptance
    assert acc is not None and acc.source == "specwise /metrics"
    assert (acc.drafted, acc.accepted, acc.accepted_by_position) == (18, 9, [6, 3])
    assert run.elapsed_s >= sum(r.latency_s for r in run.records) - 0.01


def test_specwise_requests_carry_the_config_and_the_segment():
    fake = Fake()
    t = target(fake)
    work = [WorkItem(Request(id="t", turns=["first turn", "second"], segment="math reasoning/hard"), max_tokens=2)]
    work.append(WorkItem(Request(id="m", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])))
    t.run(work, FIXED, Load(concurrency=1), max_tokens=9)
    t.run(work[:1], PLAIN, Load(concurrency=1), max_tokens=9)
    t.run(work[:1], MapConfig("adaptive", "adaptive"), Load(concurrency=1), max_tokens=9)
    first, second, plain, default = fake.bodies
    assert first["messages"] == [{"role": "user", "content": "first turn"}] and first["max_tokens"] == 2
    assert second["messages"][0]["role"] == "system" and second["max_tokens"] == 9 and "segment" not in second
    assert first["segment"] == "math_reasoning_hard"
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True} and first["temperature"] == 0
    assert first["model"] == "m"
    assert first["speculation"] == {"drafter": "ngram", "policy": "fixed", "num_speculative_tokens": 4}
    assert plain["speculation"] == {"drafter": "none"}
    assert default["speculation"] == {"policy": "adaptive"}  # the server's drafter and K


def test_constraints_are_sent_as_response_format_or_structured_outputs():
    fake = Fake()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    constraints = [
        Constraint.json_schema(schema), Constraint.json_object(), Constraint.regex("[0-9]+"), Constraint.choice(["yes", "no"]),
        Constraint.grammar('start: "x"'),
    ]  # fmt: skip
    work = [WorkItem(Request(id=str(i), prompt="p", constraint=c)) for i, c in enumerate(constraints)]
    target(fake).run(work, PLAIN, Load(concurrency=1), max_tokens=4)
    b = fake.bodies
    assert b[0]["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert b[1]["response_format"] == {"type": "json_object"}
    assert b[2]["structured_outputs"] == {"regex": "[0-9]+"}
    assert b[3]["structured_outputs"] == {"choice": ["yes", "no"]}
    assert b[4]["structured_outputs"] == {"grammar": 'start: "x"'}


def test_closed_loop_keeps_concurrency_requests_in_flight():
    fake = Fake(tokens=4, first_s=0.06, gap_s=0.03)  # ~0.15 s a request
    run = target(fake).run(items("a", "b", "c", "d"), PLAIN, Load(concurrency=2), max_tokens=8)
    sent = sorted(r.sent_s for r in run.records)
    assert sent[1] < 0.05 and sent[2] >= 0.13
    assert 0.28 <= run.elapsed_s < 0.6


def test_open_loop_sends_at_the_arrival_times():
    fake = Fake(tokens=2, first_s=0.02, gap_s=0.01)
    work = items(*"abcdef")
    load = Load(rate=10.0)
    run = target(fake).run(work, PLAIN, load, max_tokens=8, seed=3)
    times = arrival_times(work, load, 3)
    for r, t in zip(run.records, times):
        assert t - 0.002 <= r.sent_s < t + 0.1
    assert run.elapsed_s >= times[-1]


def test_failures_midway_are_recorded_and_the_run_goes_on():
    fake = Fake(tokens=4, first_s=0.01, gap_s=0.01)
    run = target(fake).run(items("ok", "fail", "ok", "streamerror", "drop", "ok"), FIXED, Load(concurrency=2), max_tokens=8)
    errors = [r.error for r in run.records]
    assert errors[0] is None and errors[2] is None and errors[5] is None
    assert errors[1] == "HTTP 500: boom on two lines"
    assert errors[3] == "error in the stream: the engine failed"
    assert errors[4].startswith("connection dropped")
    assert all("\n" not in e for e in errors if e)
    ok = [r for r in run.records if r.ok]
    acc = run.acceptance
    assert acc is not None and (acc.drafted, acc.accepted) == (sum(r.drafted for r in ok), sum(r.accepted for r in ok)) == (18, 9)


def test_a_request_past_the_timeout_fails_alone():
    fake = Fake(tokens=2, first_s=0.3, gap_s=0.01)
    begin = time.monotonic()
    run = target(fake, timeout_s=0.05).run(items("a", "b"), FIXED, Load(concurrency=1), max_tokens=4)
    assert [r.error for r in run.records] == ["timed out after 0.05 s"] * 2  # each tried: the server is there, only slow
    assert time.monotonic() - begin < 0.5


def test_an_unreachable_server_fails_the_rest_fast():
    fake = Fake(tokens=2, first_s=0.01, gap_s=0.01)
    dying = Dying(fake.transport(), alive=2)
    t = EndpointTarget("http://fake", transport=dying)
    t.probe()
    run = t.run(items(*"abcdef"), FIXED, Load(concurrency=1), max_tokens=8)
    errors = [r.error for r in run.records]
    assert errors[:2] == [None, None] and errors[2] == "connection refused"
    assert errors[3:] == ["not sent: http://fake is unreachable (connection refused)"] * 3
    assert dying.posts == 3  # the rest were never tried
    acc = run.acceptance  # /metrics is gone too: summed from the answers
    assert acc is not None and (acc.drafted, acc.accepted, acc.source) == (4, 2, "specwise usage")

    dying = Dying(fake.transport(), alive=1)
    t = EndpointTarget("http://fake", transport=dying)
    t.probe()
    work = items(*"abcdef")
    times = arrival_times(work, Load(rate=4.0), 1)
    run = t.run(work, FIXED, Load(rate=4.0), max_tokens=8, seed=1)
    assert [r.ok for r in run.records] == [True] + [False] * 5
    assert run.elapsed_s < times[1] + 0.5 < times[-1]  # the later ones did not wait for their turn


def test_probe_of_an_unreachable_url_is_one_quick_line():
    begin = time.monotonic()
    with pytest.raises(SpecwiseError) as info:
        EndpointTarget("http://127.0.0.1:9/v1").probe()
    message = str(info.value)
    assert time.monotonic() - begin < 5
    assert "http://127.0.0.1:9" in message and "connection refused" in message and "\n" not in message


def test_probe_refuses_what_is_not_an_openai_server():
    with pytest.raises(SpecwiseError, match=r"^http://fake/v1/models answered HTTP 404: no such route$"):
        target(Fake(models_status=404)).probe()
    html = StreamingASGI(
        Starlette(routes=[Route("/v1/models", lambda _: Response("<html>hello</html>", media_type="text/html"))])
    )
    with pytest.raises(SpecwiseError, match="not an OpenAI-compatible model list: <html>hello</html>"):
        EndpointTarget("http://fake", transport=html).probe()
    with pytest.raises(SpecwiseError, match=r"does not serve the model 'nope' \(it serves m, other\)"):
        target(Fake(), model="nope").probe()


def test_plain_and_speculative_on_one_launched_server_need_a_baseline():
    fake = Fake("vllm")
    t = target(fake)
    with pytest.raises(SpecwiseError, match="--baseline-endpoint") as info:
        t.check_configs([PLAIN, FIXED])
    assert "\n" not in str(info.value)
    with pytest.raises(SpecwiseError, match="one speculative config"):
        t.check_configs([FIXED, ADAPTIVE])
    t.check_configs([FIXED])
    t.run(items("a"), PLAIN, Load(concurrency=1), max_tokens=4)
    with pytest.raises(SpecwiseError, match="--baseline-endpoint"):
        t.run(items("a"), FIXED, Load(concurrency=1), max_tokens=4)
    target(Fake()).check_configs([PLAIN, FIXED, ADAPTIVE])  # specwise takes the config per request


def test_a_baseline_endpoint_serves_plain():
    spec, base = Fake("vllm"), Fake("llamacpp")
    t = EndpointTarget("http://spec", baseline_url="http://base", transport=Router(spec=spec.transport(), base=base.transport()))
    t.check_configs([PLAIN, FIXED])
    assert (t.server_kind, t.baseline_kind) == ("vllm", "llamacpp") and "plain on llamacpp http://base" in t.name
    plain = t.run(items("a", "b"), PLAIN, Load(concurrency=2), max_tokens=4)
    fixed = t.run(items("a", "b"), FIXED, Load(concurrency=2), max_tokens=4)
    assert len(base.bodies) == 2 and len(spec.bodies) == 2
    assert not any("speculation" in b or "segment" in b for b in base.bodies + spec.bodies)
    assert plain.acceptance is not None and plain.acceptance.source == "llama.cpp timings"
    assert fixed.acceptance is not None and fixed.acceptance.source == "vllm /metrics"


def test_vllm_acceptance_from_its_counters():
    fake = Fake("vllm", tokens=5)
    t = target(fake)
    t.run(items("warm"), FIXED, Load(concurrency=1), max_tokens=8)  # counted before the run: not in its delta
    run = t.run(items("a", "b", "c"), FIXED, Load(concurrency=3), max_tokens=8)
    acc = run.acceptance
    assert acc is not None and acc.source == "vllm /metrics"
    assert (acc.drafted, acc.accepted, acc.accepted_by_position) == (24, 12, [6, 6])
    assert all(r.drafted is None for r in run.records)  # vLLM's answers do not carry it


def test_llamacpp_acceptance_from_timings():
    run = target(Fake("llamacpp", tokens=3)).run(items("a", "b"), FIXED, Load(concurrency=1), max_tokens=8)
    assert [(r.drafted, r.accepted) for r in run.records] == [(4, 2), (4, 2)]
    acc = run.acceptance
    assert acc is not None and (acc.drafted, acc.accepted, acc.source) == (8, 4, "llama.cpp timings")


def test_sglang_acceptance_derived_from_verify_steps():
    run = target(Fake("sglang", tokens=4)).run(items("a", "b"), FIXED, Load(concurrency=2), max_tokens=8)
    acc = run.acceptance  # per answer: 4 tokens = 1 from prefill + 2 steps (2 + 1 tokens): 1 accepted, 4 drafted
    assert acc is not None and (acc.drafted, acc.accepted, acc.accepted_by_position) == (8, 2, [])
    assert acc.source.startswith("sglang /metrics (accepted = generated tokens - verify steps - requests")


def test_sglang_acceptance_from_its_accept_length_gauge():
    run = target(Fake("sglang", tokens=4, sglang_counters=False)).run(items("a", "b"), FIXED, Load(concurrency=2), max_tokens=8)
    acc = run.acceptance  # 6 tokens after the first at 1.5 a step: 4 steps, 2 accepted, 8 drafted
    assert acc is not None and (acc.drafted, acc.accepted) == (8, 2)
    assert "accept-length gauge" in acc.source and "approximate" in acc.source


def test_no_acceptance_where_nothing_reports_it():
    run = target(Fake("unknown", owned_by="me")).run(items("a"), FIXED, Load(concurrency=1), max_tokens=4)
    assert run.records[0].ok and run.acceptance is None


@pytest.mark.slow
def test_against_specwise_serve():
    from tests.server_util import ServeProcess

    proc = ServeProcess("--drafter", "ngram", "--max-num-seqs", "4", "--max-model-len", "1024")
    try:
        proc.wait_ready()
        t = EndpointTarget(proc.url)
        t.probe()
        assert t.server_kind == "specwise"
        prompts = [
            "Count from one to twenty in words.", "List the days of the week.",
            "Repeat: the cat sat on the mat, the cat sat on the mat.", "Write the alphabet in capitals.",
        ]  # fmt: skip
        work = items(*prompts, segment="demo")
        runs = [t.run(work, config, Load(concurrency=2), max_tokens=24) for config in (PLAIN, FIXED)]
        for run in runs:
            assert all(r.ok for r in run.records), [r.error for r in run.records]
            assert all(0 < r.ttft_s <= r.latency_s and 0 < r.output_tokens <= 24 for r in run.records)
            acc = run.acceptance
            assert acc is not None and acc.source == "specwise /metrics"
            assert acc.drafted == sum(r.drafted for r in run.records) and acc.accepted == sum(r.accepted for r in run.records)
            positions = range(len(acc.accepted_by_position))
            assert acc.accepted_by_position == [
                sum(r.accepted_by_position[p] for r in run.records if p < len(r.accepted_by_position)) for p in positions
            ]
        plain, fixed = runs
        assert plain.acceptance.drafted == 0 and all(r.drafted == 0 for r in plain.records)
        assert fixed.acceptance.drafted > 0
    finally:
        assert proc.stop() == 0, proc.output()
