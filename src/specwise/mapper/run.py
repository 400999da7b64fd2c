"""One map: warm up, run every config at every load in interleaved rounds, then
measure, recommend and write the report, also when it stops early.

Before anything is timed, each config runs a few short requests untimed
(kernel build, drafter load, step-cost profile, compiled grammars land on no
side). Within each load, round r runs the configs in an order rotated by r,
so no config always goes first; every run starts from a forgotten prefix
cache and a fresh policy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from specwise.errors import SpecwiseError
from specwise.mapper import measures
from specwise.mapper.calibration import calibration
from specwise.mapper.measures import SLO, load_fields
from specwise.mapper.recommend import recommend
from specwise.mapper.records import Load, MapConfig, Record, Run, WorkItem


class Target(Protocol):
    kind: str
    name: str
    model: str

    def run(
        self, items: Sequence[WorkItem], config: MapConfig, load: Load, *, max_tokens: int, seed: int = 0, repeat: int = 0,
        on_record: Callable[[Record], None] | None = None,
    ) -> Run: ...  # fmt: skip


@dataclass(slots=True)
class Plan:
    items: list[WorkItem]
    workload: str
    configs: list[MapConfig]
    loads: list[Load]
    repeats: int = 1
    max_tokens: int = 64
    slo: SLO = field(default_factory=SLO)
    expected: Load | None = None
    seed: int = 0

    @property
    def total_runs(self) -> int:
        return len(self.configs) * len(self.loads) * self.repeats


WARMUP_REQUESTS = 2
WARMUP_TOKENS = 8


def warm_up(target: Target, plan: Plan) -> None:
    items = plan.items[:WARMUP_REQUESTS]
    for config in plan.configs:
        target.run(items, config, Load(concurrency=1), max_tokens=WARMUP_TOKENS)


def execute(target: Target, plan: Plan, on_run: Callable[[Run], None] | None = None) -> tuple[list[Run], str | None]:
    """Every (config, load, repeat) in interleaved order. Returns the finished runs and,
    if the map stopped early (Ctrl-C, an endpoint failing), why."""
    runs: list[Run] = []
    try:
        warm_up(target, plan)
        for li, load in enumerate(plan.loads):
            for repeat in range(plan.repeats):
                shift = (li + repeat) % len(plan.configs)
                for config in plan.configs[shift:] + plan.configs[:shift]:
                    run = target.run(plan.items, config, load, max_tokens=plan.max_tokens, seed=plan.seed + repeat, repeat=repeat)
                    runs.append(run)
                    if on_run is not None:
                        on_run(run)
                    failed = [r for r in run.records if not r.ok]
                    if failed:
                        return runs, f"{len(failed)} of {len(run.records)} requests failed under {config.name} at {load.label}: {failed[0].error}"
    except KeyboardInterrupt:
        return runs, "interrupted"
    return runs, None


def report(target: Target, plan: Plan, runs: Sequence[Run], stopped: str | None, simulated: Sequence[Run] = ()) -> dict[str, object]:
    complete = [run for run in runs if run.records and all(r.ok for r in run.records)]
    out: dict[str, object] = {
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": {"kind": target.kind, "name": target.name, "model": target.model},
        "workload": {"name": plan.workload, "requests": len(plan.items), "segments": _segment_counts(plan.items)},
        "loads": [load_fields(ld) for ld in plan.loads],
        "configs": [c.name for c in plan.configs],
        "slo": plan.slo.to_dict(),
        "measured": measures.rows(runs, plan.slo),
        "stopped": stopped,
    }
    if simulated:
        out["simulated"] = [{**row, "simulated": True} for row in measures.rows(simulated, plan.slo)]
    try:
        out["recommendation"], out["crossover"] = recommend(complete, plan.expected, simulated)
    except SpecwiseError as exc:  # too little measured to compare
        out["recommendation"], out["crossover"] = None, {}
        out["recommendation_missing"] = str(exc)
    return out


def _segment_counts(items: Sequence[WorkItem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.segment] = counts.get(item.segment, 0) + 1
    return counts


def write(directory: Path, target: Target, plan: Plan, runs: Sequence[Run], stopped: str | None) -> dict[str, object]:
    """DIR/report.json, DIR/report.html, DIR/calibration.json."""
    from specwise.mapper.html import write_report_html

    directory.mkdir(parents=True, exist_ok=True)
    settings = {"loads": [load_fields(ld) for ld in plan.loads], "repeats": plan.repeats, "max_tokens": plan.max_tokens, "workload": plan.workload}
    cal = calibration(target, runs, plan.items, settings)
    (directory / "calibration.json").write_text(json.dumps(cal, indent=1))
    rep = report(target, plan, runs, stopped, simulated_runs(cal, plan, runs))
    (directory / "report.json").write_text(json.dumps(rep, indent=1))
    write_report_html(rep, directory / "report.html")
    return rep


SIM_RUNS = 3


def simulated_runs(cal: dict[str, object], plan: Plan, runs: Sequence[Run]) -> list[Run]:
    """The simulator, calibrated on this map, at every measured load (to set beside the
    measurements) and at the expected load if it was not measured. None for an
    endpoint (no step costs) or a map too small to fit."""
    from specwise.simulator import Calibration, simulate_run

    if "steps" not in cal or not runs:
        return []
    try:
        model = Calibration(cal, "this map")
    except SpecwiseError:
        return []
    loads = list(dict.fromkeys([run.load for run in runs] + ([plan.expected] if plan.expected is not None else [])))
    configs = list(dict.fromkeys(run.config for run in runs))
    return [simulate_run(model, c, load, plan.seed + r, repeat=r) for load in loads for r in range(SIM_RUNS) for c in configs]
