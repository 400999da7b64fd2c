"""From runs to ROWs: per config, load and segment ("all" for the whole workload).

Latency figures are percentiles over the requests of a run; throughput and
goodput divide by the run's wall time (a segment's share of the run's
tokens, for segment rows: segments share the batch). With repeats, each
figure is the median over the repeats and the spread of the headline ones
is kept, because these machines drift by 10% within minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from specwise.mapper.records import Load, Record, Run

ALL = "all"
SPREAD = ("throughput_tok_s", "p50_latency_s")


@dataclass(slots=True, frozen=True)
class SLO:
    """Service-level objectives a request must meet to count in goodput (None: no bound)."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def met(self, r: Record) -> bool:
        tpot = r.tpot_s or 0.0
        return (
            r.ok
            and (self.ttft_s is None or r.ttft_s <= self.ttft_s)
            and (self.tpot_s is None or tpot <= self.tpot_s)
            and (self.e2e_s is None or r.latency_s <= self.e2e_s)
        )

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s), ("e2e_s", self.e2e_s)) if v is not None}


def load_fields(load: Load) -> dict[str, float]:
    if load.concurrency is not None:
        return {"concurrency": load.concurrency}
    return {"rate": load.rate, "burstiness": load.burstiness}  # type: ignore[dict-item]


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4) if values else 0.0


def figures(run: Run, records: Sequence[Record], slo: SLO) -> dict[str, object]:
    """One run's figures over some of its records."""
    ok = [r for r in records if r.ok]
    lat, ttft = [r.latency_s for r in ok], [r.ttft_s for r in ok]
    tpot = [t for r in ok if (t := r.tpot_s) is not None]
    gaps = [g for r in ok for g in r.chunk_gaps_s]
    tokens = sum(r.output_tokens for r in ok)
    known = [r for r in ok if r.drafted is not None]
    drafted = sum(r.drafted or 0 for r in known)
    accepted = sum(r.accepted or 0 for r in known)
    steps = sum(r.steps or 0 for r in known)
    if not known and run.acceptance is not None and len(records) == len(run.records):
        drafted, accepted = run.acceptance.drafted, run.acceptance.accepted
    return {
        "requests": len(records), "errors": len(records) - len(ok),
        "p50_latency_s": _pct(lat, 50), "p90_latency_s": _pct(lat, 90), "p99_latency_s": _pct(lat, 99),
        "p50_ttft_s": _pct(ttft, 50), "p90_ttft_s": _pct(ttft, 90), "p99_ttft_s": _pct(ttft, 99),
        "p50_tpot_s": _pct(tpot, 50), "p90_tpot_s": _pct(tpot, 90), "p50_itl_s": _pct(gaps, 50), "p99_itl_s": _pct(gaps, 99),
        "throughput_tok_s": round(tokens / run.elapsed_s, 2) if run.elapsed_s else 0.0,
        "goodput_req_s": round(sum(slo.met(r) for r in ok) / run.elapsed_s, 4) if run.elapsed_s else 0.0,
        "acceptance_rate": round(accepted / drafted, 4) if drafted else 0.0,
        "mean_acceptance_length": round(1 + accepted / steps, 4) if steps else (1.0 if known else 0.0),
        "acceptance_by_position": acceptance_by_position(known),
        "output_tokens": tokens,
    }  # fmt: skip


def acceptance_by_position(records: Sequence[Record]) -> list[float]:
    """Per draft position j: accepted / verified at j (a draft at j is verified whether or
    not the earlier ones were accepted, so this is P(accepted at j | drafted at j))."""
    drafted: list[int] = []
    accepted: list[int] = []
    for r in records:
        for counts, mine in ((drafted, r.drafted_by_position), (accepted, r.accepted_by_position)):
            counts.extend([0] * (len(mine) - len(counts)))
            for j, n in enumerate(mine):
                counts[j] += n
    return [round(a / d, 4) if d else 0.0 for a, d in zip(accepted, drafted)]


def rows(runs: Sequence[Run], slo: SLO) -> list[dict[str, object]]:
    """One ROW per (config, load, segment), medians over repeats, in run order."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.config.name, run.load.label), []).append(run)
    out = []
    for repeats in groups.values():
        first = repeats[0]
        segments = [ALL, *sorted({r.segment for r in first.records})]
        for segment in segments:
            per_repeat = [figures(run, [r for r in run.records if segment == ALL or r.segment == segment], slo) for run in repeats]
            row: dict[str, object] = {"config": first.config.name, **load_fields(first.load), "segment": segment}
            row.update(_median(per_repeat))
            row["repeats"] = len(repeats)
            row["spread"] = {k: [min(f[k] for f in per_repeat), max(f[k] for f in per_repeat)] for k in SPREAD}  # type: ignore[type-var]
            out.append(row)
    return out


def _median(per_repeat: list[dict[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in per_repeat[0].items():
        if isinstance(value, list):
            width = max(len(f[key]) for f in per_repeat)  # type: ignore[arg-type]
            cols = [[f[key][j] for f in per_repeat if j < len(f[key])] for j in range(width)]  # type: ignore[index, arg-type]
            out[key] = [round(float(np.median(c)), 4) for c in cols]
        else:
            med = float(np.median([f[key] for f in per_repeat]))  # type: ignore[arg-type]
            out[key] = int(med) if isinstance(value, int) else round(med, 4)
    return out
