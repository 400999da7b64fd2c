"""The analytic planner against values computed by hand."""

from __future__ import annotations

import pytest

from specwise.errors import SpecwiseError
from specwise.planner import MoE, best_k, break_even, crossover, expected_tokens, linear_cost, speedup

FLAT = linear_cost({1: 1.0})


def test_expected_tokens_match_the_closed_form():
    assert expected_tokens(0.6, 5) == pytest.approx(2.38, abs=0.005)  # (1 - 0.6**6) / 0.4 = 2.3834
    assert expected_tokens(0.8, 5) == pytest.approx(3.69, abs=0.005)  # (1 - 0.8**6) / 0.2 = 3.6893
    assert expected_tokens(0.0, 5) == 1.0 and expected_tokens(1.0, 5) == 6.0 and expected_tokens(0.7, 0) == 1.0
    assert expected_tokens([0.9, 0.5, 0.2], 3) == pytest.approx(1 + 0.9 + 0.45 + 0.09)
    assert expected_tokens([0.9, 0.5], 4) == pytest.approx(1 + 0.9 + 0.45 + 0.225 + 0.1125)  # the last rate holds beyond


def test_speedup_is_e_over_kc_plus_one_when_verify_rows_are_free():
    assert speedup(0.6, 5, FLAT, draft_cost=0.05) == pytest.approx(2.3834 / 1.25, abs=1e-3)
    assert speedup(0.6, 5, FLAT) == pytest.approx(2.3834, abs=1e-3)


def test_break_even_acceptance_for_a_cost_ratio():
    # K = 1, c = 0.1, flat verify: (1 + a) / 1.1 = 1 -> a = 0.1
    assert break_even(1, FLAT, draft_cost=0.1) == pytest.approx(0.1, abs=1e-4)
    # K = 1, verify of 2 rows costs 1.5 one-row steps, c = 0: (1 + a) / 1.5 = 1 -> a = 0.5
    assert break_even(1, linear_cost({1: 1.0, 2: 1.5})) == pytest.approx(0.5, abs=1e-4)
    # K = 2, c = 0, flat: 1 + a + a^2 = 1 -> a = 0; with c = 0.5: 1 + a + a^2 = 2 -> a = 0.618
    assert break_even(2, FLAT, draft_cost=0.5) == pytest.approx(0.618, abs=1e-3)
    assert break_even(3, FLAT, draft_cost=2.0) is None  # 4 tokens for 7 steps: never


def test_best_k_and_the_crossover_where_rows_stop_being_free():
    # Rows cost 1 up to 8, then grow linearly (compute-bound): a batch of 8 has no room.
    cost = linear_cost({1: 1.0, 8: 1.0, 64: 8.0})
    k, s = best_k(0.7, 8, cost, batch=1)
    assert k > 0 and s > 2
    assert best_k(0.7, 8, cost, batch=16)[0] == 0
    assert crossover(0.7, 8, cost, 0.0, [1, 2, 4, 8, 16]) == 8
    assert crossover(0.7, 8, FLAT, 0.0, [1, 16]) is None


def test_moe_verify_rows_touch_more_experts_and_erase_the_gain():
    moe = MoE(experts=64, top_k=2, expert_share=0.9)
    assert moe.distinct(1) == pytest.approx(2.0) and moe.distinct(5) == pytest.approx(64 * (1 - (62 / 64) ** 5))
    dense = speedup(0.6, 4, FLAT)
    sparse = speedup(0.6, 4, moe.scale(FLAT))
    assert dense == pytest.approx(expected_tokens(0.6, 4))
    assert sparse < dense / 3 and sparse < 1.0  # 5 rows read about 4.7x the experts of one


@pytest.mark.parametrize("call", [lambda: expected_tokens(1.2, 3), lambda: expected_tokens(0.5, -1), lambda: MoE(8, 9),
                                  lambda: linear_cost({0: 1.0}), lambda: speedup(0.5, 2, FLAT, draft_cost=-1)])  # fmt: skip
def test_impossible_parameters_are_errors(call):
    with pytest.raises(SpecwiseError):
        call()


def test_a_noisy_profile_never_makes_more_rows_cheaper():
    cost = linear_cost({1: 2.0, 5: 1.5, 10: 3.0})
    assert cost(5) == 2.0 and cost(3) == 2.0 and cost(10) == 3.0
    assert speedup(0.6, 4, cost) <= expected_tokens(0.6, 4)
