"""The simulator on synthetic calibrations (no model): the same seed gives the same
numbers, and with acceptance 0 speculation is never ahead of plain."""

from __future__ import annotations

import json

import pytest

from specwise.errors import SpecwiseError
from specwise.mapper.records import Load, MapConfig
from specwise.simulator import Acceptance, Calibration, StepFit, simulate

PLAIN = MapConfig("plain", "plain")
FIXED = MapConfig("fixed", "fixed", "ngram", 4)
ADAPT = MapConfig("adaptive", "adaptive", "ngram", 4)


def calibration(accept: float, propose: float = 1.0) -> dict:
    drafted = [int(1000 * propose ** (j + 1)) for j in range(4)]
    accepted = [int(drafted[j] * accept ** (j + 1)) for j in range(4)]
    counts = {"drafter": "ngram", "steps": 1000, "drafted_by_position": drafted, "accepted_by_position": accepted}
    samples = [[r, r, 0, 100 * (r % 7 + 1), 0.02 + 0.002 * r + 1e-6 * 100 * (r % 7 + 1), 0.0] for r in range(1, 64)]
    return {
        "version": 2, "machine": {}, "configs": [], "requests": [["a", 40, 30], ["b", 80, 50]] * 6,
        "segments": {s: {"acceptance": {"fixed": counts, "adaptive": counts}} for s in ("a", "b")},
        "step_cost_profile": {"rows": [1, 4, 16, 64], "seconds": [0.022, 0.028, 0.052, 0.148]},
        "steps": {"samples": samples}, "scheduler": {"max_batched_tokens": 256, "max_model_len": 2048},
    }  # fmt: skip


def test_the_step_fit_recovers_a_linear_cost():
    fit = Calibration(calibration(0.5), "c").fit
    assert fit.base == pytest.approx(0.02, abs=1e-6) and fit.per_row == pytest.approx(0.002, abs=1e-6) and fit.per_context == pytest.approx(1e-6)
    assert StepFit(0.01, 0.001, 0.0)(10, 500) == pytest.approx(0.02)


def test_acceptance_by_position_from_counts():
    acc = Acceptance.from_counts({"steps": 100, "drafted_by_position": [80, 80], "accepted_by_position": [40, 20]})
    assert acc.proposes == [0.8, 1.0] and acc.accepts == [0.5, 0.5]


def test_same_seed_same_numbers_and_another_seed_others():
    cal = Calibration(calibration(0.6), "c")
    a = simulate(cal, [PLAIN, FIXED], [Load(concurrency=2)], runs=2, seed=3)
    b = simulate(cal, [PLAIN, FIXED], [Load(concurrency=2)], runs=2, seed=3)
    c = simulate(cal, [PLAIN, FIXED], [Load(concurrency=2)], runs=2, seed=4)
    assert a == b and a != c
    assert all(row["simulated"] for row in a)


@pytest.mark.parametrize("load", [Load(concurrency=1), Load(concurrency=8), Load(rate=2.0)], ids=lambda ld: ld.label)
def test_with_acceptance_zero_speculation_is_never_ahead_of_plain(load):
    cal = Calibration(calibration(0.0), "c")
    rows = {r["config"]: r for r in simulate(cal, [PLAIN, FIXED, ADAPT], [load], runs=2) if r["segment"] == "all"}
    for name in ("fixed", "adaptive"):
        assert rows[name]["p50_latency_s"] >= rows["plain"]["p50_latency_s"]
        assert rows[name]["throughput_tok_s"] <= rows["plain"]["throughput_tok_s"]


def test_high_acceptance_pays_at_batch_one():
    cal = Calibration(calibration(0.9), "c")
    rows = {r["config"]: r for r in simulate(cal, [PLAIN, FIXED], [Load(concurrency=1)], runs=1) if r["segment"] == "all"}
    assert rows["fixed"]["p50_latency_s"] < rows["plain"]["p50_latency_s"] / 1.5


def test_a_calibration_from_elsewhere_is_refused_unless_forced(tmp_path):
    path = tmp_path / "cal.json"
    data = calibration(0.5)
    data["machine"] = {"cpu": "some other CPU", "cores": 64, "kernel_build": "0"}
    path.write_text(json.dumps(data))
    with pytest.raises(SpecwiseError, match="--force"):
        Calibration.load(path)
    assert Calibration.load(path, force=True).requests
    from specwise.mapper.calibration import machine
    from specwise.models import native

    data["machine"] = {"cpu": machine()["cpu"], "cores": machine()["cores"], "kernel_build": native.build_id()}
    data["model"] = {"name": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    path.write_text(json.dumps(data))
    assert Calibration.load(path, model="/models/SmolLM2-135M-Instruct.Q4_1.gguf").requests
    with pytest.raises(SpecwiseError, match="not 'other.gguf'"):
        Calibration.load(path, model="other.gguf")
    path.write_text("{}")
    with pytest.raises(SpecwiseError, match="version 2"):
        Calibration.load(path)
