"""Measures and the recommendation on synthetic runs (no model): figures by hand,
gains paired by repeat, the crossover interpolated, and never a config that
measured slower than plain."""

from __future__ import annotations

import math

import pytest

from specwise.errors import SpecwiseError
from specwise.mapper.measures import SLO, rows
from specwise.mapper.options import parse_configs, parse_loads, parse_slo
from specwise.mapper.recommend import recommend
from specwise.mapper.records import Load, MapConfig, Record, Run

PLAIN = MapConfig("plain", "plain")
FIXED = MapConfig("fixed", "fixed", "ngram", 4)
ADAPT = MapConfig("adaptive", "adaptive", "ngram", 4)


def record(i: int, segment: str, latency: float, tokens: int = 11, drafted: int = 0, accepted: int = 0) -> Record:
    return Record(f"r{i}", segment, 20, tokens, 0.0, latency / 10, latency, [latency / 10] * (tokens - 1), drafted=drafted, accepted=accepted,
                  drafted_by_position=[drafted // 2, drafted - drafted // 2] if drafted else [],
                  accepted_by_position=[accepted // 2, accepted - accepted // 2] if accepted else [], steps=tokens - accepted)  # fmt: skip


def run(config: MapConfig, load: Load, latency: dict[str, float], repeat: int = 0, elapsed: float = 10.0) -> Run:
    recs = [record(i, seg, lat, drafted=8 if config.speculates else 0, accepted=4 if config.speculates else 0)
            for i, (seg, lat) in enumerate((s, v) for s, v in latency.items() for _ in range(3))]  # fmt: skip
    return Run(config, load, recs, elapsed, repeat)


def test_figures_of_a_run():
    r = run(FIXED, Load(concurrency=2), {"a": 2.0, "b": 4.0})
    [all_row, a_row, b_row] = rows([r], SLO(e2e_s=3.0))
    assert (all_row["segment"], a_row["segment"], b_row["segment"]) == ("all", "a", "b")
    assert all_row["requests"] == 6 and all_row["p50_latency_s"] == 3.0 and a_row["p99_latency_s"] == 2.0
    assert all_row["throughput_tok_s"] == 6 * 11 / 10.0
    assert all_row["goodput_req_s"] == 0.3  # the three of segment a meet e2e <= 3 s
    assert all_row["acceptance_rate"] == 0.5 and all_row["mean_acceptance_length"] == pytest.approx(1 + 24 / 42, abs=1e-4)
    assert a_row["p50_tpot_s"] == pytest.approx((2.0 - 0.2) / 10)
    assert all_row["acceptance_by_position"] == [0.5, 0.5]


def test_repeats_give_medians_and_spread():
    load = Load(concurrency=1)
    runs = [run(PLAIN, load, {"a": lat}, repeat=i) for i, lat in enumerate((1.0, 3.0, 2.0))]
    row = rows(runs, SLO())[0]
    assert row["p50_latency_s"] == 2.0 and row["repeats"] == 3 and row["spread"]["p50_latency_s"] == [1.0, 3.0]


def sweep(gain_by_load: dict[int, float], segments=("a",)) -> list[Run]:
    out = []
    for c, gain in gain_by_load.items():
        load = Load(concurrency=c)
        for repeat in range(2):
            base = {s: 2.0 * c for s in segments}
            out.append(run(PLAIN, load, base, repeat))
            out.append(run(FIXED, load, {s: v / gain for s, v in base.items()}, repeat))
            out.append(run(ADAPT, load, {s: v / min(gain, 1.05) for s, v in base.items()}, repeat))
    return out


def test_recommends_the_best_speculative_config_with_its_gain_and_crossover():
    rec, cross = recommend(sweep({1: 1.6, 4: 1.2, 16: 0.8}), Load(concurrency=4))
    overall = rec["overall"]
    assert overall["config"] == "fixed" and overall["speculate"] and overall["gain"] == pytest.approx(1.2)
    # Gains 1.2 at 4 and 0.8 at 16: through 1 halfway on a log scale, at 8.
    expected = math.exp(math.log(4) + 0.5 * (math.log(16) - math.log(4)))
    assert overall["turn_off_above"] == pytest.approx(expected, abs=0.01) and cross["all"]["concurrency"] == overall["turn_off_above"]
    assert rec["basis"] == "measured"


def test_never_recommends_a_config_slower_than_plain():
    rec, _ = recommend(sweep({1: 1.6, 4: 1.2, 16: 0.8}), Load(concurrency=16))
    assert rec["overall"]["config"] == "plain" and not rec["overall"]["speculate"]
    assert "no speculative config beat plain" in rec["overall"]["reason"]


def test_an_unmeasured_expected_load_uses_the_nearest_and_says_so():
    rec, _ = recommend(sweep({1: 1.6, 16: 0.8}), Load(concurrency=2))
    assert rec["expected"] == {"concurrency": 2} and "nearest measured load c=1" in rec["basis"]
    assert rec["overall"]["config"] == "fixed"


def test_speculation_that_pays_everywhere_has_no_turn_off_and_one_that_never_pays_turns_off_at_once():
    assert recommend(sweep({1: 1.5, 4: 1.3}), None)[0]["overall"]["turn_off_above"] is None
    rec, cross = recommend(sweep({1: 0.9, 4: 0.8}), None)
    assert rec["overall"]["config"] == "plain" and cross["all"]["concurrency"] == 1


def test_per_segment_recommendations_differ_where_segments_do():
    load = Load(concurrency=1)
    runs = []
    for repeat in range(2):
        runs.append(run(PLAIN, load, {"copy": 2.0, "free": 2.0}, repeat))
        runs.append(run(FIXED, load, {"copy": 1.0, "free": 2.4}, repeat))
    rec, _ = recommend(runs, None)
    assert rec["segments"]["copy"]["config"] == "fixed" and rec["segments"]["free"]["config"] == "plain"


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: parse_configs("fixed,adaptive", "ngram", 4), "needs plain"),
        (lambda: parse_configs("plain,turbo", "ngram", 4), "unknown config"),
        (lambda: parse_configs("plain,fixed:medusa", "ngram", 4), "unknown drafter"),
        (lambda: parse_configs("plain,fixed", "ngram", 0), "-k must be"),
        (lambda: parse_loads("1,x", None, 1.0), "comma-separated numbers"),
        (lambda: parse_loads("1.5", None, 1.0), "whole numbers"),
        (lambda: parse_loads(None, "0", 1.0), "> 0"),
        (lambda: parse_slo("latency=3"), "unknown SLO"),
        (lambda: recommend([run(FIXED, Load(concurrency=1), {"a": 1.0})], None), "needs the plain config"),
    ],
)
def test_bad_options_are_one_line_errors(call, fragment):
    with pytest.raises(SpecwiseError, match=None) as info:
        call()
    assert fragment in str(info.value)


def test_configs_with_their_own_drafters():
    configs = parse_configs("plain,fixed,adaptive:eagle", "ngram", 3)
    assert [(c.name, c.policy, c.drafter, c.num_speculative_tokens) for c in configs] == [
        ("plain", "plain", "none", 0), ("fixed", "fixed", "ngram", 3), ("adaptive:eagle", "adaptive", "eagle", 3)]  # fmt: skip


class FlakyTarget:
    """Answers the warm-up and the first timed run, then every request fails."""

    kind, name, model = "endpoint", "fake endpoint", "m"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, items, config, load, *, max_tokens, seed=0, repeat=0, on_record=None):
        self.calls += 1
        fail = self.calls > 3  # two warm-ups (plain, fixed), one good run
        recs = [record(i, "a", 1.0) for i in range(3)]
        for r in recs:
            r.error = "HTTP 500: boom" if fail else None
        return Run(config, load, recs, 1.0, repeat)


def test_an_endpoint_failing_midway_stops_the_map_and_the_finished_runs_are_written(tmp_path):
    from specwise.mapper.run import Plan, execute, write
    from specwise.mapper.workload import builtin_workload

    plan = Plan(builtin_workload()[:3], "w", [PLAIN, FIXED], [Load(concurrency=1), Load(concurrency=2)])
    runs, stopped = execute(FlakyTarget(), plan)
    assert len(runs) == 2 and stopped == "3 of 3 requests failed under fixed at c=1: HTTP 500: boom"
    rep = write(tmp_path, FlakyTarget(), plan, runs, stopped)
    assert rep["stopped"] == stopped and rep["recommendation"] is None
    assert {r["config"] for r in rep["measured"]} == {"plain", "fixed"}
    assert all((tmp_path / f).exists() for f in ("report.json", "report.html", "calibration.json"))


def test_a_dip_below_one_between_paying_loads_is_not_the_turn_off_point():
    rec, cross = recommend(sweep({1: 1.5, 4: 0.95, 16: 1.1}), Load(concurrency=16))
    assert rec["overall"]["config"] == "fixed" and rec["overall"]["turn_off_above"] is None
    _, cross = recommend(sweep({1: 1.5, 4: 0.95, 16: 1.1, 32: 0.9}), None)
    assert 16 < cross["all"]["concurrency"] < 32


def test_an_unmeasured_expected_load_is_recommended_from_simulated_runs_with_their_spread():
    measured = sweep({1: 1.6, 16: 0.8})
    load = Load(concurrency=4)
    simulated = []
    for repeat, gain in enumerate((1.25, 1.3, 1.2)):
        simulated += [run(PLAIN, load, {"a": 8.0}, repeat), run(FIXED, load, {"a": 8.0 / gain}, repeat), run(ADAPT, load, {"a": 8.0}, repeat)]
    rec, _ = recommend(measured, load, simulated)
    assert rec["basis"].startswith("simulated (3 seeded runs") and rec["overall"]["config"] == "fixed"
    assert (rec["overall"]["gain_low"], rec["overall"]["gain"], rec["overall"]["gain_high"]) == pytest.approx((1.2, 1.25, 1.3), abs=1e-3)
    assert recommend(measured, Load(concurrency=1), simulated)[0]["basis"] == "measured"
