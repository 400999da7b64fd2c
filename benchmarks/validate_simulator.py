"""The simulator against measurement: calibrate from one map, predict the loads of
another, and compare row by row.

    specwise map --concurrency 1,4,16 --output /tmp/valA             # the calibration
    specwise map --concurrency 2,8,12 --rate 1 --output /tmp/valB    # what is predicted, measured
    python benchmarks/validate_simulator.py --calibration /tmp/valA/calibration.json \\
        --measured /tmp/valB/report.json --output benchmarks/results/simulator_validation.json

Errors are (simulated - measured) / measured of p50 latency, p99 latency and
throughput, per config, load and segment ("all": the whole workload).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from specwise.mapper.records import Load
from specwise.simulator import Calibration, simulate

FIGURES = ("p50_latency_s", "p99_latency_s", "throughput_tok_s")


def _load(row: dict) -> Load:
    return Load(concurrency=row["concurrency"]) if "concurrency" in row else Load(rate=row["rate"], burstiness=row.get("burstiness", 1.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calibration", type=Path, required=True)
    ap.add_argument("--measured", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    cal = Calibration.load(args.calibration)
    measured = json.loads(args.measured.read_text())["measured"]
    loads = list(dict.fromkeys(_load(r) for r in measured))
    simulated = simulate(cal, cal.configs(), loads, runs=args.runs)
    key = lambda r: (r["config"], _load(r).label, r["segment"])  # noqa: E731
    sims = {key(r): r for r in simulated}
    table = []
    for row in measured:
        sim = sims.get(key(row))
        if sim is None:
            continue
        errors = {f: round((sim[f] - row[f]) / row[f], 3) if row[f] else None for f in FIGURES}
        table.append({"config": row["config"], "load": _load(row).label, "segment": row["segment"], "errors": errors,
                      "measured": {f: row[f] for f in FIGURES}, "simulated": {f: sim[f] for f in FIGURES}})  # fmt: skip
    args.output.write_text(json.dumps({"rows": table, "calibration": str(args.calibration), "runs": args.runs}, indent=1))
    print(f"{'load':>7} {'config':>9} {'segment':>13} " + " ".join(f"{f:>22}" for f in FIGURES))
    for t in table:
        cells = " ".join(f"{t['measured'][f]:>8.2f} {t['simulated'][f]:>7.2f} {100 * (t['errors'][f] or 0):+5.0f}%" for f in FIGURES)
        print(f"{t['load']:>7} {t['config']:>9} {t['segment']:>13} {cells}")
    for segment in ("all",):
        rows = [t for t in table if t["segment"] == segment]
        for f in FIGURES:
            errs = sorted(abs(t["errors"][f] or 0) for t in rows)
            print(f"{segment} {f}: median |error| {100 * errs[len(errs) // 2]:.0f}%, max {100 * errs[-1]:.0f}%")


if __name__ == "__main__":
    main()
