"""probabilities(): temperature, top-k, top-p; SamplingParams validation."""

from __future__ import annotations

import math

import pytest
import torch

from specwise.errors import SpecwiseError
from specwise.sampling import SamplingParams, probabilities


def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(x - m) for x in row]
    s = sum(e)
    return [x / s for x in e]


@pytest.mark.parametrize("temperature", [0.25, 0.7, 1.0, 2.5])
def test_temperature_scaling_is_softmax_of_scaled_logits(temperature):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 17, generator=g) * 3
    probs = probabilities(logits, SamplingParams(temperature=temperature))
    assert probs.shape == logits.shape
    for row, got in zip(logits.tolist(), probs):
        want = torch.tensor(_softmax([x / temperature for x in row]))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_lower_temperature_sharpens():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    cold = probabilities(logits, SamplingParams(temperature=0.5))
    hot = probabilities(logits, SamplingParams(temperature=2.0))
    assert cold[0, 0] > hot[0, 0]
    assert cold[0, -1] < hot[0, -1]


@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_top_k_keeps_exactly_k_tokens(k):
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(4, 10, generator=g)  # distinct values (continuous draws)
    probs = probabilities(logits, SamplingParams(temperature=1.0, top_k=k))
    for row, got in zip(logits, probs):
        kept = set((got > 0).nonzero().flatten().tolist())
        assert len(kept) == k
        assert kept == set(torch.argsort(row, descending=True)[:k].tolist())
        # Renormalised softmax over the kept tokens.
        idx = sorted(kept)
        want = _softmax([float(row[i]) for i in idx])
        torch.testing.assert_close(got[idx], torch.tensor(want), rtol=1e-5, atol=1e-6)
        assert float(got.sum()) == pytest.approx(1.0, abs=1e-6)


def test_top_k_at_or_above_vocab_is_a_no_op():
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    plain = probabilities(logits, SamplingParams(temperature=1.0))
    for k in (3, 4, 100):
        torch.testing.assert_close(probabilities(logits, SamplingParams(temperature=1.0, top_k=k)), plain)


BASE = [0.40, 0.25, 0.15, 0.10, 0.06, 0.04]


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        (0.01, 1),  # the top token alone already reaches it
        (0.39, 1),
        (0.5, 2),  # 0.40 < 0.5 <= 0.65
        (0.7, 3),  # 0.65 < 0.7 <= 0.80
        (0.85, 4),  # 0.80 < 0.85 <= 0.90
        (0.93, 5),
        (0.99, 6),
        (1.0, 6),
    ],
)
def test_top_p_keeps_smallest_prefix_reaching_top_p(top_p, kept):
    order = [3, 0, 5, 1, 4, 2]  # shuffle so the sort inside is exercised
    probs_in = [0.0] * 6
    for rank, pos in enumerate(order):
        probs_in[pos] = BASE[rank]
    logits = torch.tensor([probs_in]).log()
    got = probabilities(logits, SamplingParams(temperature=1.0, top_p=top_p))[0]
    keep_pos = order[:kept]
    assert set((got > 0).nonzero().flatten().tolist()) == set(keep_pos)
    mass = sum(BASE[:kept])
    for rank, pos in enumerate(keep_pos):
        assert float(got[pos]) == pytest.approx(BASE[rank] / mass, rel=1e-5)
    assert float(got.sum()) == pytest.approx(1.0, abs=1e-6)


def test_top_p_is_per_row():
    logits = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.34, 0.33, 0.33]]).log()
    got = probabilities(logits, SamplingParams(temperature=1.0, top_p=0.8))
    assert (got[0] > 0).tolist() == [True, False, False]
    assert (got[1] > 0).tolist() == [False, False, True]
    assert (got[2] > 0).tolist() == [True, True, True]  # 0.34 + 0.33 < 0.8


def test_top_k_and_top_p_combine():
    logits = torch.tensor([[0.40, 0.25, 0.15, 0.10, 0.06, 0.04]]).log()
    # top_k=3 renormalises to 0.50, 0.3125, 0.1875; top_p=0.7 then needs the first two.
    got = probabilities(logits, SamplingParams(temperature=1.0, top_k=3, top_p=0.7))[0]
    assert (got > 0).tolist() == [True, True, False, False, False, False]
    assert float(got[0]) == pytest.approx(0.40 / 0.65, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -1.0},
        {"temperature": -1e-6},
        {"top_p": 0.0},
        {"top_p": -0.5},
        {"top_p": 1.0001},
        {"top_p": 2.0},
        {"top_k": -1},
        {"max_tokens": 0},
        {"max_tokens": -3},
        {"stop": ("ok", "")},
    ],
)
def test_sampling_params_validation_rejects(kwargs):
    with pytest.raises(SpecwiseError):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0.0}, {"top_p": 1.0}, {"top_p": 1e-6}, {"top_k": 0}, {"max_tokens": 1}, {"stop": ("\n",)}],
)
def test_sampling_params_validation_accepts_boundaries(kwargs):
    SamplingParams(**kwargs)


def test_greedy_property():
    assert SamplingParams().greedy
    assert not SamplingParams(temperature=0.1).greedy
