"""`specwise serve` through the official openai client and raw HTTP: output equal to
in-process LLM.generate, usage and /metrics that agree, load, disconnects,
backpressure, every client error, fuzzing and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specwise import Request, SamplingParams
from specwise.demo_prompts import DEMO_PROMPTS
from tests.server_util import ServeProcess, gauge, scrape, wait_drained

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow

MAX_LEN = 1024
SLOTS = 16


@pytest.fixture(scope="module")
def server():
    proc = ServeProcess("--drafter", "ngram,eagle", "--max-num-seqs", str(SLOTS), "--max-model-len", str(MAX_LEN), "--served-model-name", "smol")
    try:
        proc.wait_ready()
        yield proc
    finally:
        assert proc.stop() == 0, proc.output()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _reference(llm, prompts: list[str], max_tokens: int, chat: bool = True):
    params = SamplingParams(max_tokens=max_tokens)
    return [llm.generate([Request(id=str(i), prompt=p)], params, None, chat=chat)[0] for i, p in enumerate(prompts)]


PROMPTS = [r.prompt for r in DEMO_PROMPTS]


@pytest.mark.parametrize("speculation", [None, {"drafter": "eagle", "num_speculative_tokens": 3, "policy": "fixed"}, {"drafter": "none"}])
def test_chat_equals_in_process_generate_streaming_and_not(llm, client, speculation):
    refs = _reference(llm, PROMPTS, 40)
    extra = {"speculation": speculation} if speculation else {}
    drafted = 0
    for prompt, ref in zip(PROMPTS, refs):
        out = client.chat.completions.create(
            model="smol", messages=_messages(prompt), max_tokens=40, temperature=0, extra_body={**extra, "return_token_ids": True}
        )
        choice = out.choices[0]
        assert choice.message.content == ref.text
        assert choice.model_extra["token_ids"] == ref.token_ids
        assert choice.finish_reason == ref.finish_reason
        usage = out.usage
        assert usage.prompt_tokens == ref.stats.prompt_tokens and usage.completion_tokens == len(ref.token_ids)
        spec = usage.model_extra["speculative_decoding"]
        drafted += spec["drafted"]
        assert spec["accepted"] <= spec["drafted"] and sum(spec["accepted_by_position"]) == spec["accepted"]
        stream = client.chat.completions.create(
            model="smol", messages=_messages(prompt), max_tokens=40, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body=extra,
        )  # fmt: skip
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == ref.text
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [ref.finish_reason]
        assert chunks[-1].usage.completion_tokens == len(ref.token_ids)
    if speculation == {"drafter": "none"}:
        assert drafted == 0, "a request that turned speculation off drafted"
    else:
        assert drafted > 0


def test_completions_equal_in_process_generate_streaming_and_not(llm, client):
    prompts = ["def fibonacci(n):\n", "The three primary colours are", PROMPTS[1]]
    refs = _reference(llm, prompts, 32, chat=False)
    for prompt, ref in zip(prompts, refs):
        out = client.completions.create(model="smol", prompt=prompt, max_tokens=32, temperature=0)
        assert out.choices[0].text == ref.text and out.usage.completion_tokens == len(ref.token_ids)
        text = "".join(c.choices[0].text for c in client.completions.create(model="smol", prompt=prompt, max_tokens=32, temperature=0, stream=True))
        assert text == ref.text
    ids = llm.tokenizer.encode(prompts[0])
    by_ids = client.completions.create(model="smol", prompt=ids, max_tokens=32, temperature=0)
    assert by_ids.choices[0].text == refs[0].text


PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}  # fmt: skip


@pytest.mark.parametrize(
    "extra, constraint",
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}}, ("json_schema", PERSON)),
        ({"response_format": {"type": "json_object"}}, ("json_object", None)),
        ({"extra_body": {"structured_outputs": {"regex": "[0-9]{4}-[0-9]{2}"}}}, ("regex", "[0-9]{4}-[0-9]{2}")),
        ({"extra_body": {"guided_choice": ["yes", "no"]}}, ("choice", ["yes", "no"])),
    ],
)
def test_structured_output_equals_in_process_and_holds_with_speculation(llm, client, extra, constraint):
    from specwise import SpeculativeConfig
    from specwise.structured import Constraint

    kind, arg = constraint
    c = Constraint.json_object() if kind == "json_object" else getattr(Constraint, kind)(arg)
    prompt = "Who wrote Hamlet, and how old was he when he died? Answer in JSON."
    ref = llm.generate([prompt], SamplingParams(max_tokens=40, constraint=c), SpeculativeConfig("ngram", 4))[0]
    body = dict(extra)
    extra_body = {**body.pop("extra_body", {}), "speculation": {"drafter": "ngram", "policy": "fixed"}, "return_token_ids": True}
    out = client.chat.completions.create(model="smol", messages=_messages(prompt), max_tokens=40, temperature=0, extra_body=extra_body, **body)
    choice = out.choices[0]
    assert choice.model_extra["token_ids"] == ref.token_ids and choice.message.content == ref.text
    assert choice.finish_reason == ref.finish_reason
    if kind == "json_schema" and ref.finish_reason == "stop":
        import jsonschema

        jsonschema.validate(json.loads(choice.message.content), PERSON)
    assert out.usage.model_extra["speculative_decoding"]["forced_tokens"] == ref.stats.forced_tokens


@pytest.mark.parametrize(
    "body, param, fragment",
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "not": {}}}}}, "response_format", "Unimplemented"),
        ({"response_format": {"type": "yaml"}}, "response_format", "yaml"),
        ({"structured_outputs": {"regex": "a(b"}}, "structured_outputs", "unclosed group"),
        ({"guided_grammar": "start: nothing_here"}, "guided_grammar", "unknown name"),
        ({"guided_choice": []}, "guided_choice", "non-empty"),
        ({"guided_regex": "a", "guided_choice": ["b"]}, "guided_regex", "give one constraint"),
        ({"reasoning_end": "</think>"}, None, "needs a constraint"),
    ],
)
def test_bad_constraints_get_400_with_the_openai_error_body(server, body, param, fragment):
    resp = httpx.post(server.url + "/v1/chat/completions", json={**CHAT_OK, **body}, timeout=30)
    err = _error(resp, 400)
    assert fragment in err["message"] and err["param"] == param


def test_metrics_counters_equal_the_sums_of_usage_per_segment(server, client):
    wait_drained(server.url)
    before = scrape(server.url)
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    cases = [("copy", PROMPTS[0]), ("copy", PROMPTS[1]), ("chat", PROMPTS[2]), (None, PROMPTS[3])]
    for i, (segment, prompt) in enumerate(cases):
        headers = {"X-Segment": segment} if segment and i % 2 else {}
        body = {"segment": segment} if segment and not i % 2 else {}
        out = client.chat.completions.create(
            model="smol", messages=_messages(prompt), max_tokens=48, temperature=0, extra_body=body, extra_headers=headers
        )
        spec = out.usage.model_extra["speculative_decoding"]
        seg = segment or "default"
        for key in ("num_drafts", "drafted", "accepted"):
            sums[seg][key] += spec[key]
        for pos, n in enumerate(spec["accepted_by_position"]):
            sums[seg][f"pos{pos}"] += n
        sums[seg]["prompt"] += out.usage.prompt_tokens
        sums[seg]["generation"] += out.usage.completion_tokens
        sums[seg]["requests"] += 1
    after = scrape(server.url)

    def delta(name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        return after[name].get(key, 0.0) - before[name].get(key, 0.0)

    for seg, s in sums.items():
        assert delta("specwise:spec_decode_num_drafts_total", segment=seg) == s["num_drafts"]
        assert delta("specwise:spec_decode_num_draft_tokens_total", segment=seg) == s["drafted"]
        assert delta("specwise:spec_decode_num_accepted_tokens_total", segment=seg) == s["accepted"]
        for pos in range(8):
            assert delta("specwise:spec_decode_num_accepted_tokens_per_pos_total", segment=seg, position=str(pos)) == s[f"pos{pos}"]
        assert delta("specwise:prompt_tokens_total", segment=seg) == s["prompt"]
        assert delta("specwise:generation_tokens_total", segment=seg) == s["generation"]
        ended = sum(delta("specwise:request_success_total", segment=seg, finish_reason=r) for r in ("stop", "length"))
        assert ended == s["requests"]
    assert sums["copy"]["drafted"] > 0
    assert after["specwise:time_to_first_token_seconds_count"][()] - before["specwise:time_to_first_token_seconds_count"][()] == len(cases)
    estimates = after["specwise:spec_decode_acceptance_estimate"]
    assert any(dict(k)["segment"] == "copy" for k in estimates)
    assert all(0 <= v <= 1 for v in after["specwise:spec_decode_break_even_acceptance"].values())


def test_64_concurrent_streams_all_finish_each_equal_to_its_solo_output(llm, server):
    prompts = [f"{p}\n(Request {i}.)" for i in range(16) for p in PROMPTS]
    assert len(prompts) == 64
    refs = _reference(llm, prompts, 24)
    aclient = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)

    async def one(prompt: str) -> tuple[str, list[str], bool]:
        async with aclient.with_streaming_response.chat.completions.create(
            model="smol", messages=_messages(prompt), max_tokens=24, temperature=0, stream=True
        ) as resp:
            lines = [line async for line in resp.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        return text, [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]], True

    async def run():
        return await asyncio.gather(*(one(p) for p in prompts))

    results = asyncio.run(run())
    for (text, reasons, _), ref in zip(results, refs):
        assert reasons == [ref.finish_reason]
        assert text == ref.text


def test_a_client_that_disconnects_mid_stream_frees_its_slot_within_a_second(server, client):
    wait_drained(server.url)
    body = {"model": "smol", "messages": _messages("Tell me a very long story."), "max_tokens": 900, "ignore_eos": True, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as resp:
        lines = resp.iter_lines()  # held open: leaving a loop over it would close the stream
        for _ in range(4):
            while not next(lines):
                pass
        assert gauge(server.url, "specwise:num_requests_running") == 1
    closed = time.monotonic()
    while gauge(server.url, "specwise:num_requests_running") and time.monotonic() - closed < 1.0:
        time.sleep(0.02)
    assert gauge(server.url, "specwise:num_requests_running") == 0, "the abandoned request still holds its slot"
    out = client.chat.completions.create(model="smol", messages=_messages("Say hi."), max_tokens=8, temperature=0)
    assert out.choices[0].finish_reason in ("stop", "length")


def _error(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    return err


CHAT_OK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.mark.parametrize(
    "body, param",
    [
        ({**CHAT_OK, "temperature": -0.5}, "temperature"),
        ({**CHAT_OK, "max_tokens": 0}, "max_tokens"),
        ({**CHAT_OK, "messages": []}, "messages"),
        ({**CHAT_OK, "max_tokens": "5"}, "max_tokens"),
        ({**CHAT_OK, "messages": "hi"}, "messages"),
        ({**CHAT_OK, "top_p": 0}, "top_p"),
        ({**CHAT_OK, "n": 2}, "n"),
        ({**CHAT_OK, "stop": [""]}, "stop"),
        ({**CHAT_OK, "speculation": {"drafter": "medusa"}}, "speculation.drafter"),
        ({**CHAT_OK, "speculation": {"num_speculative_tokens": -1}}, "speculation.num_speculative_tokens"),
        ({**CHAT_OK, "speculation": {"policy": "greedy"}}, "speculation.policy"),
        ({**CHAT_OK, "segment": "no spaces allowed"}, "segment"),
        ({**CHAT_OK, "messages": [{"role": "wizard", "content": "hi"}]}, None),
    ],
)
def test_invalid_parameters_get_400_with_the_openai_error_body(server, body, param):
    err = _error(httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30), 400)
    if param is not None:
        assert err["param"] == param or err["param"].startswith(param)


def test_malformed_json_wrong_model_long_prompts_and_unknown_routes(server):
    url = server.url
    _error(httpx.post(url + "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}, timeout=30), 400)
    _error(httpx.post(url + "/v1/completions", content=b"[1, 2]", headers={"content-type": "application/json"}, timeout=30), 400)
    _error(httpx.post(url + "/v1/chat/completions", json={**CHAT_OK, "model": "gpt-4"}, timeout=30), 404, "model_not_found")
    long = {"messages": [{"role": "user", "content": "word " * 1500}], "max_tokens": 4}
    _error(httpx.post(url + "/v1/chat/completions", json=long, timeout=30), 400, "context_length_exceeded")
    _error(httpx.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": MAX_LEN}, timeout=30), 400, "context_length_exceeded")
    _error(httpx.post(url + "/v1/completions", json={"prompt": [MAX_LEN * 100], "max_tokens": 2}, timeout=30), 400)
    _error(httpx.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 2, "speculation": {"num_speculative_tokens": 99}}, timeout=30), 400)
    _error(httpx.get(url + "/v1/nothing", timeout=30), 404)
    _error(httpx.get(url + "/v1/chat/completions", timeout=30), 405)
    assert httpx.post(url + "/v1/chat/completions", json=CHAT_OK, timeout=30).status_code == 200
    models = httpx.get(url + "/v1/models", timeout=30).json()
    assert [m["id"] for m in models["data"]] == ["smol"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5) | st.floats(-2, 3, allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
FIELDS = ["model", "messages", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "n", "stream", "stream_options",
          "ignore_eos", "speculation", "segment", "max_completion_tokens", "logprobs", "presence_penalty", "return_token_ids"]  # fmt: skip
MESSAGES = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]), "content": JSON_VALUES}), max_size=2)
RANDOM_BODIES = st.fixed_dictionaries(
    {"max_tokens": st.integers(-1, 3) | st.text(max_size=3) | st.floats(0, 3)},
    optional={f: (MESSAGES if f == "messages" else JSON_VALUES) for f in FIELDS if f != "max_tokens"},
)
# A valid request with one or two fields replaced: reaches sampling, speculation and streaming.
VALID = {"messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "max_tokens": 3, "temperature": 0}
MUTATED = st.dictionaries(st.sampled_from([f for f in FIELDS if f != "max_tokens"]), JSON_VALUES, min_size=1, max_size=2).map(lambda m: {**VALID, **m})
BODIES = RANDOM_BODIES | MUTATED


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=BODIES, path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_fuzzed_request_bodies_never_get_a_500_or_hang(server, body, path):
    resp = httpx.post(server.url + path, json=body, timeout=60)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert "error" in resp.json()


def test_a_normal_request_succeeds_after_the_fuzzing(client):
    out = client.chat.completions.create(model="smol", messages=_messages("Name a colour."), max_tokens=6, temperature=0)
    assert out.choices[0].message.content


def test_loading_auth_backpressure_and_sigterm():
    """A second server: 503 while it loads, 401 without the key, 429s past --max-queue,
    and SIGTERM lets a running stream finish, then exits 0."""
    proc = ServeProcess("--max-num-seqs", "2", "--max-queue", "4", "--api-key", "sesame", "--max-model-len", "512")
    try:
        proc.wait_listening()
        loading = httpx.get(proc.url + "/v1/models", headers={"Authorization": "Bearer sesame"}, timeout=10)
        _error(loading, 503, "model_loading")  # the port answers seconds before the model is loaded
        proc.wait_ready()
        key = {"Authorization": "Bearer sesame"}
        _error(httpx.post(proc.url + "/v1/chat/completions", json=CHAT_OK, timeout=30), 401)
        _error(httpx.post(proc.url + "/v1/chat/completions", json=CHAT_OK, headers={"Authorization": "Bearer wrong"}, timeout=30), 401)
        assert httpx.get(proc.url + "/metrics", timeout=10).status_code == 200  # not behind the key

        async def burst():
            async with httpx.AsyncClient(base_url=proc.url, headers=key, timeout=120) as http:
                body = {"messages": _messages("Count slowly to one hundred."), "max_tokens": 48, "ignore_eos": True, "temperature": 0}
                return await asyncio.gather(*(http.post("/v1/chat/completions", json=body) for _ in range(16)))

        responses = asyncio.run(burst())
        ok = [r for r in responses if r.status_code == 200]
        rejected = [r for r in responses if r.status_code == 429]
        assert len(ok) + len(rejected) == 16
        assert len(ok) >= 6 and len(rejected) >= 8, [r.status_code for r in responses]
        for r in rejected:
            assert r.json()["error"]["type"] == "rate_limit_error"
        assert all(r.json()["choices"][0]["finish_reason"] == "length" for r in ok)

        body = {"prompt": "Once upon a time", "max_tokens": 80, "ignore_eos": True, "temperature": 0, "stream": True}
        with httpx.stream("POST", proc.url + "/v1/completions", json=body, headers=key, timeout=60) as resp:
            lines = iter(resp.iter_lines())
            assert next(line for line in lines if line).startswith("data: ")
            proc.proc.terminate()
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]", "the running stream was cut off by SIGTERM"
        assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "length"
        assert proc.proc.wait(30) == 0
    finally:
        proc.stop()
