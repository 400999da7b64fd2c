"""Tables for people (rich); scripts read the JSONL output instead."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from specwise.api import Result, SpeculativeConfig
from specwise.metrics import RequestStats
from specwise.workload.sweep import SweepRow


def _total(results: Sequence[Result]) -> RequestStats:
    total = RequestStats()
    for r in results:
        total.merge(r.stats)
    return total


def print_results(results: Sequence[Result], spec: SpeculativeConfig) -> None:
    table = Table(title=f"specwise: drafter={spec.drafter}, K={spec.num_speculative_tokens}")
    for col in ("id", "tokens", "steps", "accept rate", "accepted/step", "tok/s", "TTFT s"):
        table.add_column(col, justify="left" if col == "id" else "right")
    for r in results:
        s = r.stats
        table.add_row(r.id, str(s.new_tokens), str(s.steps), f"{s.acceptance_rate:.2f}", f"{s.mean_accepted_per_step:.2f}", f"{s.tokens_per_s:.1f}", f"{s.ttft_s:.3f}")
    t = _total(results)
    table.add_row("all", str(t.new_tokens), str(t.steps), f"{t.acceptance_rate:.2f}", f"{t.mean_accepted_per_step:.2f}", f"{t.tokens_per_s:.1f}", "", style="bold")
    Console().print(table)


def print_comparison(plain: Sequence[Result], spec_results: Sequence[Result], spec: SpeculativeConfig) -> None:
    table = Table(title=f"plain vs speculative (drafter={spec.drafter}, K={spec.num_speculative_tokens})")
    for col in ("id", "tokens", "plain tok/s", "spec tok/s", "speedup", "accept rate", "accepted/step", "by position %", "same output"):
        table.add_column(col, justify="left" if col in ("id", "by position %") else "right")
    for p, s in zip(plain, spec_results):
        ps, ss = p.stats, s.stats
        by_pos = "/".join(f"{100 * a:.0f}" for a in ss.acceptance_by_position())
        speedup = ss.tokens_per_s / ps.tokens_per_s if ps.tokens_per_s else 0.0
        table.add_row(
            p.id, str(ss.new_tokens), f"{ps.tokens_per_s:.1f}", f"{ss.tokens_per_s:.1f}", f"{speedup:.2f}x",
            f"{ss.acceptance_rate:.2f}", f"{ss.mean_accepted_per_step:.2f}", by_pos, "yes" if p.token_ids == s.token_ids else "NO",
        )  # fmt: skip
    tp, ts = _total(plain), _total(spec_results)
    speedup = ts.tokens_per_s / tp.tokens_per_s if tp.tokens_per_s else 0.0
    table.add_row("all", str(ts.new_tokens), f"{tp.tokens_per_s:.1f}", f"{ts.tokens_per_s:.1f}", f"{speedup:.2f}x", f"{ts.acceptance_rate:.2f}", f"{ts.mean_accepted_per_step:.2f}", "", "", style="bold")
    Console().print(table)


def print_sweep(rows: Sequence[SweepRow]) -> None:
    table = Table(title="concurrency sweep")
    for col in ("policy", "concurrency", "p50 latency s", "p99 latency s", "p50 TTFT s", "tok/s", "accept rate"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for r in rows:
        table.add_row(r.policy, str(r.concurrency), f"{r.p50_latency_s:.2f}", f"{r.p99_latency_s:.2f}", f"{r.p50_ttft_s:.2f}", f"{r.throughput_tok_s:.1f}", f"{r.acceptance_rate:.2f}")
    Console().print(table)
