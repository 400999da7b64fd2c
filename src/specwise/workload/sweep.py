"""Replay a prompt set at several concurrency levels under several policies.

At concurrency N the engine keeps N requests in flight (continuous batching)
until the prompt set is done; every (policy, N) pair is one row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from specwise.api import LLM, Result, SpeculativeConfig
from specwise.errors import SpecwiseError
from specwise.metrics import RequestStats
from specwise.prompts import Request
from specwise.sampling import SamplingParams

POLICY_NAMES = ("plain", "fixed", "adaptive")


@dataclass(slots=True)
class SweepRow:
    policy: str
    concurrency: int
    requests: int
    p50_latency_s: float
    p99_latency_s: float
    p50_ttft_s: float
    throughput_tok_s: float
    acceptance_rate: float
    mean_accepted_per_step: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def summarize(policy: str, concurrency: int, results: Sequence[Result], elapsed_s: float) -> SweepRow:
    total = RequestStats()
    for r in results:
        total.merge(r.stats)
    # Closed loop: N requests in flight, the next admitted as one finishes, so a
    # request's latency runs from its admission (queue time is the harness's, not the server's).
    latencies = [r.stats.wall_s for r in results]
    return SweepRow(
        policy=policy,
        concurrency=concurrency,
        requests=len(results),
        p50_latency_s=round(float(np.percentile(latencies, 50)), 4),
        p99_latency_s=round(float(np.percentile(latencies, 99)), 4),
        p50_ttft_s=round(float(np.percentile([r.stats.ttft_s for r in results], 50)), 4),
        throughput_tok_s=round(total.new_tokens / elapsed_s, 2),
        acceptance_rate=round(total.acceptance_rate, 4),
        mean_accepted_per_step=round(total.mean_accepted_per_step, 4),
    )


def spec_for(policy: str, base: SpeculativeConfig) -> SpeculativeConfig:
    if policy not in POLICY_NAMES:
        raise SpecwiseError(f"unknown policy {policy!r} (choose from {', '.join(POLICY_NAMES)})")
    if policy == "plain":
        return SpeculativeConfig("none", 0)
    return SpeculativeConfig(base.drafter, base.num_speculative_tokens, base.ngram_min, base.ngram_max, policy=policy)


def sweep(
    llm: LLM,
    requests: Sequence[Request],
    params: SamplingParams,
    base: SpeculativeConfig,
    concurrencies: Sequence[int],
    policies: Sequence[str],
    *,
    chat: bool = True,
    on_row: Callable[[SweepRow], None] | None = None,
) -> list[SweepRow]:
    specs = {p: spec_for(p, base) for p in policies}  # validate every name before any work
    rows = []
    for n in concurrencies:
        for policy in policies:
            decider = llm.make_policy(specs[policy])  # any one-time profiling stays outside the timer
            start = time.perf_counter()
            results = llm.generate(requests, params, specs[policy], chat=chat, concurrency=n, policy=decider)
            row = summarize(policy, n, results, time.perf_counter() - start)
            rows.append(row)
            if on_row:
                on_row(row)
    return rows
