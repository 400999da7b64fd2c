"""The speculation policy on synthetic costs and acceptance (no model)."""

from __future__ import annotations

import pytest

from specwise.drafters.ngram import NgramDrafter
from specwise.policy import AcceptanceStats, AdaptivePolicy, CostModel, FixedPolicy
from specwise.sampling import SamplingParams
from specwise.sequence import Sequence


def _seqs(n: int, segment: str = "s") -> list[Sequence]:
    drafter = NgramDrafter()
    return [Sequence(str(i), [1, 2, 3], 3, SamplingParams(), segment=segment, drafter=drafter) for i in range(n)]


def _trained(policy: AdaptivePolicy, seqs: list[Sequence], rate: float, steps: int = 400, round_s: float = 0.0) -> None:
    """Feed the policy drafts of 4 tokens each accepted position-wise with probability `rate`
    (deterministic pattern with that frequency)."""
    for step in range(steps):
        accepted = []
        for i, _ in enumerate(seqs):
            n = 0
            while n < 4 and ((step * 7 + i * 3 + n * 5) % 100) < rate * 100:
                n += 1
            accepted.append(n)
        policy.observe(seqs, [4] * len(seqs), accepted, len(seqs) * 5, policy.cost(len(seqs) * 5), {"ngram": 4 * round_s})


MEMORY_BOUND = CostModel([1, 2, 4, 8, 16, 32, 64, 128], [0.016, 0.0162, 0.0165, 0.017, 0.018, 0.02, 0.024, 0.032])
COMPUTE_BOUND = CostModel([1, 2, 4, 8, 16, 32, 64, 128], [0.016 * r for r in [1, 2, 4, 8, 16, 32, 64, 128]])


def test_zero_acceptance_turns_speculation_off():
    policy = AdaptivePolicy(MEMORY_BOUND, max_k=4, probe_every=10**9)
    seqs = _seqs(4)
    _trained(policy, seqs, rate=0.0)
    assert policy.choose(seqs, [4] * 4) == [0, 0, 0, 0]


def test_high_acceptance_with_memory_bound_costs_speculates():
    policy = AdaptivePolicy(MEMORY_BOUND, max_k=4, probe_every=10**9)
    seqs = _seqs(4)
    _trained(policy, seqs, rate=0.9)
    ks = policy.choose(seqs, [4] * 4)
    assert all(k > 0 for k in ks) and max(ks) == 4


def test_a_drafter_that_costs_what_it_saves_is_cut_back():
    """Draft rounds as slow as a target step: four drafts at 0.6 acceptance would buy
    about 1.3 tokens for the time of four steps."""
    cheap, dear = AdaptivePolicy(MEMORY_BOUND, max_k=4, probe_every=10**9), AdaptivePolicy(MEMORY_BOUND, max_k=4, probe_every=10**9)
    seqs = _seqs(1)
    _trained(cheap, seqs, rate=0.6, round_s=0.0005)
    _trained(dear, seqs, rate=0.6, round_s=0.016)
    assert abs(dear.round_s["ngram"] - 0.016) < 1e-9
    assert cheap.choose(seqs, [4]) == [4]
    assert dear.choose(seqs, [4]) == [0]


def test_compute_bound_costs_turn_speculation_off_even_with_good_acceptance():
    """When every extra row costs as much as a step, a draft accepted with p < 1 never pays."""
    policy = AdaptivePolicy(COMPUTE_BOUND, max_k=4, probe_every=10**9)
    seqs = _seqs(8)
    _trained(policy, seqs, rate=0.8)
    assert policy.choose(seqs, [4] * 8) == [0] * 8


def test_drafts_are_priced_at_the_rows_they_add_beside_a_prompt_chunk():
    """Memory-bound for a few rows, compute-bound for many (as on this CPU). Beside
    200 prompt rows a draft row costs a full compute-bound row (1.3 ms), but the step
    takes 0.27 s for two decoding tokens: good drafts still pay, bad ones do not."""
    costs = CostModel([1, 16, 64, 256], [0.020, 0.025, 0.080, 0.330])
    good, bad = AdaptivePolicy(costs, max_k=4, probe_every=10**9), AdaptivePolicy(costs, max_k=4, probe_every=10**9)
    seqs = _seqs(2)
    _trained(good, seqs, rate=0.7)
    _trained(bad, seqs, rate=0.0)
    assert min(good.choose(seqs, [4, 4], base_rows=200)) > 0
    assert bad.choose(seqs, [4, 4], base_rows=200) == [0, 0]


def test_caps_are_respected_and_segments_are_separate():
    policy = AdaptivePolicy(MEMORY_BOUND, max_k=4, probe_every=10**9)
    good, bad = _seqs(2, "copy"), _seqs(2, "chat")
    _trained(policy, good, rate=0.95)
    _trained(policy, bad, rate=0.0)
    ks = policy.choose(good + bad, [2, 4, 4, 4])
    assert ks[0] == 2 and ks[1] > 0 and ks[2:] == [0, 0]


def test_probe_reopens_speculation_periodically():
    policy = AdaptivePolicy(MEMORY_BOUND, max_k=4, probe_every=3)
    seqs = _seqs(2)
    _trained(policy, seqs, rate=0.0)
    choices = [policy.choose(seqs, [4, 4]) for _ in range(6)]
    assert [1, 1] in choices and [0, 0] in choices


def test_fixed_policy_and_cost_model():
    assert FixedPolicy(3).choose(_seqs(3), [5, 1, 0]) == [3, 1, 0]
    assert MEMORY_BOUND(3) == pytest.approx(0.01635)
    assert COMPUTE_BOUND(256) == pytest.approx(0.016 * 256)  # extrapolates the last segment
    stats = AcceptanceStats(max_k=3, prior_accept=0.5, prior_weight=2, decay=1.0)
    stats.observe(drafted=3, accepted=1)  # position 0 accepted, 1 rejected, 2 never tested
    # Each position shrinks toward the one before: (accepted + 2 * prior) / (tested + 2).
    assert stats.rates() == pytest.approx([2 / 3, 4 / 9, 4 / 9])
    stats.observe(drafted=3, accepted=3)
    assert stats.rates() == pytest.approx([3 / 4, 5 / 8, 3 / 4])


def test_cost_model_tracks_observed_level_and_keeps_its_shape():
    costs = CostModel([1, 2, 4], [0.010, 0.012, 0.016])
    for _ in range(500):
        costs.update(2, 0.024)  # the machine got twice as slow
    assert costs(2) == pytest.approx(0.024, rel=0.01)
    assert costs(1) == pytest.approx(0.020, rel=0.01) and costs(4) == pytest.approx(0.032, rel=0.01)


def test_cost_model_learns_a_steeper_curve_but_never_a_flatter_one():
    costs = CostModel([1, 5, 8], [0.010, 0.012, 0.018])
    for _ in range(300):  # measured now: 5 rows cost 1.47x a row, not the profiled 1.2x
        costs.update(1, 0.010)
        costs.update(5, 0.0147)
    assert costs(5) / costs(1) == pytest.approx(1.47, rel=0.03)
    assert costs(1) == pytest.approx(0.010, rel=0.05)
    assert costs(1) <= costs(2) <= costs(3) <= costs(5) <= costs(8)
    flatter = CostModel([1, 5, 8], [0.010, 0.012, 0.018])
    for _ in range(300):  # one row slowed down, five did not: rows must not look cheaper than profiled
        flatter.update(1, 0.020)
        flatter.update(5, 0.012)
    assert flatter(5) / flatter(1) == pytest.approx(1.2)
