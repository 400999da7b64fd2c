"""`specwise map` on the real model: the command end to end on a small workload
(report.json rows, report.html, calibration.json, the terminal summary), Ctrl-C
in the middle (finished runs written), and a recommendation that holds when its
config is run again at the expected load."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from specwise.mapper.engine_target import EngineTarget
from specwise.mapper.options import parse_configs
from specwise.mapper.records import Load
from specwise.mapper.run import Plan, execute, report
from specwise.mapper.workload import builtin_workload

pytestmark = pytest.mark.slow

ROW_FIELDS = {"config", "segment", "requests", "p50_latency_s", "p90_latency_s", "p99_latency_s", "p50_ttft_s", "p50_tpot_s",
              "throughput_tok_s", "goodput_req_s", "acceptance_rate", "mean_acceptance_length"}  # fmt: skip


def small_workload(path: Path, per_segment: int = 2, segments=("code-edit", "writing", "json-extract")) -> Path:
    """The first requests of some built-in segments, shortened."""
    lines = [json.loads(line) for line in (Path(__file__).resolve().parents[1] / "src/specwise/data/workload.jsonl").read_text().splitlines()]
    chosen = [{**o, "max_tokens": 24} for s in segments for o in [o for o in lines if o["segment"] == s][:per_segment]]
    path.write_text("".join(json.dumps(o) + "\n" for o in chosen))
    return path


def run_map(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "specwise.cli", "map", *args], capture_output=True, text=True, timeout=timeout)


def test_map_end_to_end_writes_report_html_and_calibration(tmp_path):
    workload = small_workload(tmp_path / "w.jsonl")
    out = tmp_path / "out"
    proc = run_map("--workload", str(workload), "--concurrency", "1,2", "--configs", "plain,fixed", "--expected-concurrency", "2",
                   "--slo", "ttft=2,tpot=0.2", "--output", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Recommendation" in proc.stdout and str(out / "report.html") in proc.stdout.replace("\n", "")
    rep = json.loads((out / "report.json").read_text())
    measured = rep["measured"]
    assert {(r["config"], r["concurrency"]) for r in measured} == {(c, n) for c in ("plain", "fixed") for n in (1, 2)}
    assert {r["segment"] for r in measured} == {"all", "code-edit", "writing", "json-extract"}
    for row in measured:
        assert ROW_FIELDS <= set(row), set(ROW_FIELDS) - set(row)
        assert row["errors"] == 0 and row["p50_latency_s"] > 0
    fixed_all = next(r for r in measured if r["config"] == "fixed" and r["segment"] == "all" and r["concurrency"] == 1)
    assert fixed_all["acceptance_rate"] > 0 and fixed_all["mean_acceptance_length"] > 1
    rec = rep["recommendation"]
    assert rec["expected"] == {"concurrency": 2} and rec["overall"]["config"] in ("plain", "fixed")
    if rec["overall"]["speculate"]:
        assert rec["overall"]["gain"] > 1.0
    html = (out / "report.html").read_text()
    assert 'id="recommendation"' in html and 'class="plot"' in html and "http://" not in html
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["model"]["name"].endswith(".gguf") and cal["machine"]["kernel_build"]
    assert len(cal["step_cost_profile"]["rows"]) == len(cal["step_cost_profile"]["seconds"]) > 5
    assert cal["steps"]["samples"] and set(cal["segments"]) == {"code-edit", "writing", "json-extract"}
    assert cal["segments"]["code-edit"]["acceptance"]["fixed"]["drafted_by_position"]


def test_ctrl_c_writes_the_finished_runs_and_exits_130(tmp_path):
    workload = small_workload(tmp_path / "w.jsonl", per_segment=3)
    out = tmp_path / "out"
    # Three repeats keep the map running well past its first timed run, when the signal comes.
    # The map starts with SIGINT at its default, as from a terminal: a runner that launched
    # the suite in the background (`cmd &` without job control) passes SIGINT ignored, and
    # Python then never raises KeyboardInterrupt (seen: the whole map ran, exit 0).
    default_sigint = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    cmd = [sys.executable, "-c", default_sigint, "-m", "specwise.cli", "map", "--workload", str(workload), "--concurrency", "1,2,4",
           "--configs", "plain,fixed,adaptive", "--repeats", "3", "--output", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    seen = ""
    while "round 1" not in seen and time.monotonic() < deadline:  # the first timed run has finished
        seen += proc.stderr.readline()
    assert "round 1" in seen, seen
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted; wrote the" in stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["stopped"] == "interrupted" and rep["measured"]
    assert (out / "report.html").exists() and (out / "calibration.json").exists()


def test_the_recommendation_at_the_expected_load_is_not_slower_than_plain_there(llm):
    """Map at concurrency 1 and 4, recommend for 4, then run the recommended config and
    plain again at 4 in alternation: the recommended one must not lose (within 10%,
    this machine's run-to-run noise)."""
    items = [i for i in builtin_workload() if i.segment in ("code-edit", "summarise")][:8]
    for item in items:
        item.max_tokens = 32
    configs = parse_configs("plain,fixed,adaptive", "ngram", 4)
    target = EngineTarget(llm)
    plan = Plan(items, "test", configs, [Load(concurrency=1), Load(concurrency=4)], repeats=2, max_tokens=32, expected=Load(concurrency=4))
    runs, stopped = execute(target, plan)
    assert stopped is None
    rec = report(target, plan, runs, None)["recommendation"]["overall"]
    chosen = next(c for c in configs if c.name == rec["config"])
    plain = configs[0]
    p50 = {chosen.name: [], plain.name: []}
    for round_ in range(3):
        for config in (chosen, plain) if round_ % 2 else (plain, chosen):
            run = target.run(items, config, Load(concurrency=4), max_tokens=32)
            p50[config.name].append(float(np.median([r.latency_s for r in run.records])))
    ratio = np.median(p50[plain.name]) / np.median(p50[chosen.name])
    assert ratio >= 0.9, (rec, p50)
