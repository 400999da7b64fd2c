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
    repeats: int = 1,
    on_row: Callable[[SweepRow], None] | None = None,
) -> list[SweepRow]:
    """One row per (policy, concurrency). With ``repeats`` > 1 the policies run in
    rounds (A B C, A B C, ...) and each figure is the median over the rounds: on a
    machine whose speed drifts over minutes, policies run back to back once each
    differ by the drift (10% seen here between single runs)."""
    if repeats < 1:
        raise SpecwiseError(f"repeats must be >= 1, got {repeats}")
    specs = {p: spec_for(p, base) for p in policies}  # validate every name before any work
    rows = []
    for n in concurrencies:
        runs: dict[str, list[SweepRow]] = {p: [] for p in policies}
        for _ in range(repeats):
            for policy in policies:
                decider = llm.make_policy(specs[policy])  # any one-time profiling stays outside the timer
                llm.reset_prefix_cache()  # no run may find the previous run's prompts cached
                start = time.perf_counter()
                results = llm.generate(requests, params, specs[policy], chat=chat, concurrency=n, policy=decider)
                runs[policy].append(summarize(policy, n, results, time.perf_counter() - start))
        for policy in policies:
            rows.append(median_row(runs[policy]))
            if on_row:
                on_row(rows[-1])
    return rows


def median_row(runs: Sequence[SweepRow]) -> SweepRow:
    """Each figure's median over repeated runs of one (policy, concurrency)."""
    first = runs[0].to_dict()
    fields = {k: (v if isinstance(v, str) else type(v)(np.median([r.to_dict()[k] for r in runs]))) for k, v in first.items()}
    return SweepRow(**fields)
