"""The concurrency sweep's harness: runs start alike and repeats are interleaved (no model needed)."""

from __future__ import annotations

import pytest

from specwise.api import Result, SpeculativeConfig
from specwise.errors import SpecwiseError
from specwise.metrics import RequestStats
from specwise.prompts import Request
from specwise.sampling import SamplingParams
from specwise.workload.sweep import SweepRow, median_row, sweep


class FakeLLM:
    """Records the calls; every run 'generates' 100 tokens a request."""

    def __init__(self) -> None:
        self.calls: list[object] = []

    def make_policy(self, spec: SpeculativeConfig) -> None:
        return None

    def reset_prefix_cache(self) -> None:
        self.calls.append("reset")

    def generate(self, requests, params, spec, *, chat, concurrency, policy):
        self.calls.append((spec.drafter, spec.policy, concurrency))
        stats = RequestStats(new_tokens=100, wall_s=1.0, ttft_s=0.1)
        return [Result(id=r.id, text="", token_ids=[], finish_reason="length", stats=stats) for r in requests]


def test_every_run_starts_from_a_forgotten_prefix_cache_and_rounds_interleave():
    llm = FakeLLM()
    sweep(llm, [Request(id="a", prompt="x")], SamplingParams(), SpeculativeConfig("ngram"), [1, 4], ["plain", "fixed"], repeats=2)
    runs = [c for c in llm.calls if c != "reset"]
    assert all(c == "reset" for c in llm.calls[::2]) and len(llm.calls) == 16
    assert [(d, n) for d, _, n in runs] == [("none", 1), ("ngram", 1)] * 2 + [("none", 4), ("ngram", 4)] * 2


def test_repeated_runs_report_the_median_of_each_figure():
    rows = [SweepRow("fixed", 4, 48, p50, 9.0, 0.5, tok, 0.5, 0.6) for p50, tok in ((3.0, 100.0), (5.0, 90.0), (4.0, 120.0))]
    row = median_row(rows)
    assert (row.policy, row.concurrency, row.requests) == ("fixed", 4, 48)
    assert row.p50_latency_s == 4.0 and row.throughput_tok_s == 100.0


def test_zero_repeats_is_a_clear_error():
    with pytest.raises(SpecwiseError, match="repeats"):
        sweep(FakeLLM(), [Request(id="a", prompt="x")], SamplingParams(), SpeculativeConfig("ngram"), [1], ["plain"], repeats=0)
