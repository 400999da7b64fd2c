"""verify_greedy on synthetic logits; verify_stochastic checked statistically.

The stochastic tests check the defining property of speculative sampling: every
emitted token follows the target distribution p, whatever the drafter proposes.
"""

from __future__ import annotations

import math

import pytest
import torch

from specwise.sampling import sample
from specwise.verify import first_rejection, verify_greedy, verify_stochastic

# ----------------------------------------------------------------- greedy

V_GREEDY = 11


def _logits_with_argmax(targets: list[int], vocab: int = V_GREEDY, seed: int = 0) -> torch.Tensor:
    """Random logits [len(targets), vocab] whose row i has its unique argmax at targets[i]."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(targets), vocab, generator=g)
    for i, t in enumerate(targets):
        logits[i, t] = logits[i].max() + 1.0 + i  # strictly the largest
    return logits


def test_greedy_all_accepted_returns_k_and_bonus_argmax():
    targets = [3, 7, 1, 9, 4]  # k = 4 drafts + 1 bonus row
    logits = _logits_with_argmax(targets)
    draft = torch.tensor(targets[:4], dtype=torch.int64)
    n, nxt = verify_greedy(logits, draft)
    assert n == 4
    assert nxt == 4
    assert nxt == int(logits[-1].argmax())


def test_greedy_mismatch_at_position_zero():
    targets = [3, 7, 1, 9]
    logits = _logits_with_argmax(targets)
    draft = torch.tensor([5, 7, 1], dtype=torch.int64)  # only the first is wrong
    n, nxt = verify_greedy(logits, draft)
    assert n == 0
    assert nxt == 3  # the target's own choice at position 0


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_scripted_oracle_right_for_j_tokens(k):
    """A drafter that agrees with the target for j tokens, then is wrong at j
    (later drafts agree again, which must not matter)."""
    targets = [(5 * i + 2) % V_GREEDY for i in range(k + 1)]
    logits = _logits_with_argmax(targets, seed=k)
    for j in range(k + 1):
        draft = list(targets[:k])
        if j < k:
            draft[j] = (targets[j] + 1) % V_GREEDY  # wrong here, right everywhere else
        n, nxt = verify_greedy(logits, torch.tensor(draft, dtype=torch.int64))
        assert n == j, f"k={k} j={j}"
        assert nxt == targets[j], f"k={k} j={j}"


def test_greedy_k_zero_returns_argmax_of_only_row():
    logits = _logits_with_argmax([6])
    n, nxt = verify_greedy(logits, torch.empty(0, dtype=torch.int64))
    assert (n, nxt) == (0, 6)


# ------------------------------------------------------------- stochastic

V = 6
N = 40_000
# Chi-square critical value for df = V - 1 = 5 at significance 0.001
# (scipy.stats.chi2.ppf(0.999, 5) = 20.515). The generators are seeded, so the
# tests are deterministic; the threshold only says how unlikely a pass by a
# correct sampler would be to look like a failure.
CHI2_CRIT_DF5_P001 = 20.515

# Target distributions per position (k = 2 drafts + the bonus row).
P = torch.tensor(
    [
        [0.30, 0.25, 0.20, 0.10, 0.10, 0.05],
        [0.05, 0.10, 0.15, 0.20, 0.20, 0.30],
        [0.20, 0.20, 0.15, 0.15, 0.15, 0.15],
    ],
    dtype=torch.float32,
)
# A random (non one-hot) draft distribution, far from P, per drafted position.
Q = torch.tensor(
    [
        [0.10, 0.10, 0.10, 0.20, 0.20, 0.30],
        [0.30, 0.20, 0.20, 0.10, 0.10, 0.10],
    ],
    dtype=torch.float32,
)


def chi_square(tokens: list[int], probs: torch.Tensor) -> float:
    counts = [0] * V
    for t in tokens:
        counts[t] += 1
    n = len(tokens)
    stat = 0.0
    for c, p in zip(counts, probs.tolist()):
        expected = n * p
        assert expected >= 5, "chi-square approximation needs expected counts >= 5"
        stat += (c - expected) ** 2 / expected
    return stat


def run_trials(verifier, drafts: torch.Tensor, draft_probs: torch.Tensor | None, seed: int):
    """Run the verifier once per row of drafts [trials, 2].

    Returns (first emitted tokens, second emitted tokens given draft 0 was accepted,
    number of trials where draft 0 was accepted).
    """
    g = torch.Generator().manual_seed(seed)
    first, second = [], []
    for draft in drafts:
        n, nxt = verifier(P, draft, draft_probs, g)
        assert 0 <= n <= 2 and 0 <= nxt < V
        if n == 0:
            first.append(nxt)
        else:
            first.append(int(draft[0]))
            second.append(int(draft[1]) if n >= 2 else nxt)
    return first, second


def _sampled_drafts(trials: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cols = [torch.multinomial(Q[i], trials, replacement=True, generator=g) for i in range(2)]
    return torch.stack(cols, dim=1)


def _fixed_drafts(trials: int, d0: int = 0, d1: int = 2) -> torch.Tensor:
    return torch.tensor([[d0, d1]], dtype=torch.int64).expand(trials, 2)


def _assert_binomial(successes: int, trials: int, prob: float) -> None:
    sd = math.sqrt(trials * prob * (1 - prob))
    z = (successes - trials * prob) / sd
    assert abs(z) < 4.5, f"{successes}/{trials} accepted, expected rate {prob} (z={z:.1f})"


def test_stochastic_random_drafter_emits_target_distribution():
    drafts = _sampled_drafts(N, seed=1)
    first, second = run_trials(verify_stochastic, drafts, Q, seed=2)
    assert len(first) == N
    assert chi_square(first, P[0]) < CHI2_CRIT_DF5_P001
    # Acceptance of draft 0 happens with probability sum_x min(p(x), q(x)).
    _assert_binomial(len(second), N, float(torch.minimum(P[0], Q[0]).sum()))
    assert chi_square(second, P[1]) < CHI2_CRIT_DF5_P001


def test_stochastic_deterministic_drafter_emits_target_distribution():
    d0, d1 = 0, 2
    first, second = run_trials(verify_stochastic, _fixed_drafts(N, d0, d1), None, seed=3)
    assert chi_square(first, P[0]) < CHI2_CRIT_DF5_P001
    # One-hot q: draft 0 is accepted with probability p_0(d0).
    _assert_binomial(len(second), N, float(P[0, d0]))
    assert chi_square(second, P[1]) < CHI2_CRIT_DF5_P001


def test_stochastic_all_accepted_returns_bonus_from_last_row():
    """When p puts all mass on the drafts, they are always accepted and the bonus follows p[k]."""
    target = torch.zeros(3, V)
    target[0, 4] = 1.0
    target[1, 1] = 1.0
    target[2, 5] = 1.0
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        assert verify_stochastic(target, torch.tensor([4, 1]), None, g) == (2, 5)


def test_stochastic_rejected_token_is_never_the_deterministic_draft():
    """After a one-hot draft is rejected, the residual excludes that token."""
    g = torch.Generator().manual_seed(0)
    draft = torch.tensor([0, 2])
    for _ in range(2000):
        n, nxt = verify_stochastic(P, draft, None, g)
        if n == 0:
            assert nxt != 0


# --------------------------------------------------- power: wrong samplers fail

# The chi-square statistic grows linearly with the number of trials for a wrong
# sampler, so being caught with fewer trials than the tests above use implies
# being caught by them too; fewer trials keep the suite fast.
N_POWER = 5_000


def _always_accept(target_probs, draft, draft_probs, generator):
    k = draft.shape[0]
    return k, sample(target_probs[k], generator)


def _resample_from_target(target_probs, draft, draft_probs, generator):
    """Rejection sampling with the classic bug: on rejection, resample from p instead of the residual."""
    n = first_rejection(target_probs, draft, draft_probs, generator)
    if n is None:
        k = draft.shape[0]
        return k, sample(target_probs[k], generator)
    return n, sample(target_probs[n], generator)


def test_power_no_rejection_is_caught():
    first, _ = run_trials(_always_accept, _sampled_drafts(N_POWER, seed=4), Q, seed=5)
    assert chi_square(first, P[0]) > CHI2_CRIT_DF5_P001


def test_power_no_rejection_deterministic_is_caught():
    first, _ = run_trials(_always_accept, _fixed_drafts(N_POWER), None, seed=6)
    assert set(first) == {0}  # the drafted token, always: not p_0 at all
    assert chi_square(first, P[0]) > CHI2_CRIT_DF5_P001


@pytest.mark.parametrize("draft_probs", ["random", "one-hot"])
def test_power_wrong_residual_is_caught(draft_probs):
    if draft_probs == "random":
        first, _ = run_trials(_resample_from_target, _sampled_drafts(N_POWER, seed=7), Q, seed=8)
    else:
        first, _ = run_trials(_resample_from_target, _fixed_drafts(N_POWER), None, seed=9)
    assert chi_square(first, P[0]) > CHI2_CRIT_DF5_P001
