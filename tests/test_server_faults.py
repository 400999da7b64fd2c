"""Fault injection: a step that raises fails only its requests (500, counted), and the
server goes on serving. The server runs in this process so a step can be made to fail."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn

from specwise.server.app import ServeConfig, Server, create_app
from tests.server_util import free_port, scrape

pytestmark = pytest.mark.slow


@pytest.fixture()
def served(llm):
    server = Server(ServeConfig(max_num_seqs=4, max_model_len=llm.max_model_len))
    server.load(llm)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.02)
    yield server, f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(10)


def test_a_step_that_raises_fails_only_its_requests_and_the_loop_survives(served, monkeypatch):
    server, url = served
    engine = server.llm.loop.scheduler.engine
    real_step, armed = engine.step, {"left": 1}

    def flaky(seqs, ks, chunks=None):
        if armed["left"] and any(s.num_prompt > 0 and len(s.output_ids) == 3 for s in seqs):
            armed["left"] -= 1
            raise RuntimeError("injected fault")
        return real_step(seqs, ks, chunks)

    monkeypatch.setattr(engine, "step", flaky)
    body = {"messages": [{"role": "user", "content": "Write a line about rivers."}], "max_tokens": 12, "temperature": 0}
    failed = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "server_error" and "injected fault" in failed.json()["error"]["message"]
    streamed = httpx.post(url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60)
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    later = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    assert later.status_code == 200 and later.json()["choices"][0]["finish_reason"] in ("stop", "length")
    metrics = scrape(url)
    assert metrics["specwise:engine_step_failures_total"][()] == 1
    assert metrics["specwise:request_failure_total"][(("segment", "default"),)] == 1


def test_a_stream_whose_step_fails_gets_an_error_event_then_done(served, monkeypatch):
    server, url = served
    engine = server.llm.loop.scheduler.engine
    real_step, armed = engine.step, {"left": 1}

    def flaky(seqs, ks, chunks=None):
        if armed["left"] and any(len(s.output_ids) == 5 for s in seqs):
            armed["left"] -= 1
            raise RuntimeError("injected fault")
        return real_step(seqs, ks, chunks)

    monkeypatch.setattr(engine, "step", flaky)
    body = {"messages": [{"role": "user", "content": "Count to ten."}], "max_tokens": 16, "temperature": 0, "stream": True}
    resp = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    events = [line for line in resp.text.splitlines() if line]
    assert events[-1] == "data: [DONE]"
    assert '"error"' in events[-2] and "injected fault" in events[-2]
