"""The server's parts that need no model: validation, auth, 503 while loading, the
metrics' arithmetic, and the shipped dashboard and alerts naming real series."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from specwise.drafters.ngram import NgramDrafter
from specwise.policy import AdaptivePolicy, CostModel
from specwise.sampling import SamplingParams
from specwise.sequence import Sequence
from specwise.server.app import ServeConfig, Server, create_app
from specwise.server.metrics import MAX_SEGMENTS, ServerMetrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _client(**config) -> TestClient:
    return TestClient(create_app(Server(ServeConfig(**config))))


def _fake_llm(policy: AdaptivePolicy | None = None) -> SimpleNamespace:
    loop = SimpleNamespace(num_running=2, num_waiting=1, scheduler=SimpleNamespace(failed_steps=3))
    return SimpleNamespace(loop=loop, cache=SimpleNamespace(num_slots=8), adaptive_policy=policy)


def test_while_the_model_loads_v1_answers_503_and_health_is_not_ready():
    client = _client()
    assert client.get("/health").status_code == 503
    resp = client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "model_loading"


def test_api_key_is_checked_before_anything_else():
    client = _client(api_key="k")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "k"}):
        resp = client.post("/v1/chat/completions", json={"bad": "body"}, headers=headers)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 503  # past auth, still loading
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    "body, param",
    [
        ({**CHAT, "temperature": "hot"}, "temperature"),
        ({**CHAT, "max_tokens": True}, "max_tokens"),
        ({**CHAT, "stream": "yes"}, "stream"),
        ({"max_tokens": 2}, "messages"),
        ({**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, "messages"),
        ({**CHAT, "top_k": -2}, "top_k"),
    ],
)
def test_wrong_types_and_shapes_are_400_naming_the_field(body, param):
    resp = _client().post("/v1/chat/completions", json=body)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"].startswith(param)


def test_a_body_that_is_not_json_is_400():
    resp = _client().post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "JSON" in resp.json()["error"]["message"]


def test_config_refuses_bad_drafters_before_loading():
    from specwise.errors import SpecwiseError

    with pytest.raises(SpecwiseError, match="unknown drafter"):
        ServeConfig(drafters=("medusa",))
    with pytest.raises(SpecwiseError, match="none"):
        ServeConfig(drafters=("none", "ngram"))


def _policy() -> AdaptivePolicy:
    policy = AdaptivePolicy(CostModel([1, 2, 3], [0.010, 0.011, 0.0125]), max_k=4)
    seq = Sequence("s", [1, 2], 2, SamplingParams(), segment="copy", drafter=NgramDrafter())
    for _ in range(20):
        policy.observe([seq], [4], [2], 5, 0.012, {"ngram": 0.0004})
    return policy


def test_break_even_is_the_acceptance_where_one_more_draft_stops_paying():
    policy = _policy()
    # One decoding sequence: plain gives 1 token in T(1); one draft gives 1 + a in T(2) + a round.
    a = policy.break_even(1, "ngram")
    assert a == pytest.approx((policy.cost(2) + policy.round_s["ngram"]) / policy.cost(1) - 1)
    assert (1 + a) / (policy.cost(2) + policy.round_s["ngram"]) == pytest.approx(1 / policy.cost(1))
    assert policy.break_even(2, "ngram") > a, "a draft row costs more of the step's output when more sequences share it"


def test_counters_follow_ended_requests_and_segments_are_capped():
    metrics = ServerMetrics(positions=4)
    metrics.bind(_fake_llm(_policy()))
    seq = Sequence("r", [1, 2, 3], 3, SamplingParams(), segment="copy")
    seq.token_ids += [4, 5, 6, 7]
    seq.finish_reason = "length"
    seq.stats.record_step(3, 2)
    seq.stats.record_step(2, 2)
    metrics.ended(seq, arrival=0.0, now=1.0)
    text = generate_latest(metrics.registry).decode()
    assert 'specwise:spec_decode_num_draft_tokens_total{segment="copy"} 5.0' in text
    assert 'specwise:spec_decode_num_accepted_tokens_per_pos_total{position="1",segment="copy"} 2.0' in text
    assert 'specwise:generation_tokens_total{segment="copy"} 4.0' in text
    assert 'specwise:request_success_total{finish_reason="length",segment="copy"} 1.0' in text
    assert "specwise:num_requests_running 2.0" in text and "specwise:kv_cache_usage_perc 0.25" in text
    assert "specwise:engine_step_failures_total 3.0" in text
    assert re.search(r'specwise:spec_decode_break_even_acceptance\{drafter="ngram",segment="copy"\} 0\.\d+', text)
    for i in range(MAX_SEGMENTS + 5):
        metrics.segment(f"s{i}")
    assert metrics.segment("one-too-many") == "_other"


def _exported_names() -> set[str]:
    metrics = ServerMetrics(positions=4)
    metrics.bind(_fake_llm(_policy()))
    for reason in ("stop", "error"):  # labelled series appear once they have a value
        seq = Sequence("r", [1], 1, SamplingParams(), segment="copy")
        seq.stats.record_step(1, 1)
        seq.finish_reason = reason
        metrics.ended(seq, 0.0, 1.0)
    metrics.first_token(0.1)
    return set(re.findall(r"^(specwise:[a-z0-9_]+)", generate_latest(metrics.registry).decode(), re.M))


def test_the_shipped_dashboard_and_alerts_name_only_exported_series():
    exported = _exported_names()
    for path in (DEPLOY / "grafana-dashboard.json", DEPLOY / "prometheus-alerts.yml"):
        used = set(re.findall(r"specwise:[a-z0-9_]+", path.read_text()))
        assert used and used <= exported, f"{path.name} names series the server does not export: {sorted(used - exported)}"
