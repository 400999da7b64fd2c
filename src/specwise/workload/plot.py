"""Latency and throughput against concurrency, one line per policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from specwise.workload.sweep import SweepRow


def plot_sweep(rows: Sequence[SweepRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4))
    for policy in dict.fromkeys(r.policy for r in rows):
        mine = sorted((r for r in rows if r.policy == policy), key=lambda r: r.concurrency)
        xs = [r.concurrency for r in mine]
        (line,) = lat.plot(xs, [r.p50_latency_s for r in mine], marker="o", label=f"{policy} p50")
        lat.plot(xs, [r.p99_latency_s for r in mine], marker="x", linestyle="--", color=line.get_color(), label=f"{policy} p99")
        thr.plot(xs, [r.throughput_tok_s for r in mine], marker="o", label=policy)
    for ax, label in ((lat, "request latency (s)"), (thr, "throughput (tokens/s)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
