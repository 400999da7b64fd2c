"""Does speculation pay, before any measurement: the analytic model of
ARCHITECTURE.md (Leviathan et al., 2023) on a measured or given cost profile.

With acceptance a per draft position and K drafts, a verify step yields
E(K) = 1 + sum_j prod_{m<=j} a_m tokens (E = (1 - a^(K+1)) / (1 - a) for one
a). At batch b a plain step costs T(b); a speculative step costs
T(b (K + 1)) for the verify rows plus K draft rounds of c T(b) each (c: a
draft round over a target step). The speedup is E T(b) / (T(b (K+1)) + K c T(b)).

A mixture-of-experts target reads the weights of the experts its rows touch:
R rows routed to k of N experts each touch N (1 - (1 - k/N)^R) distinct
experts, so the verify rows of a speculative step read more expert weights
than the one row of a plain step, and T grows with rows even where a dense
model's would not (the MoE trap).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from specwise.errors import SpecwiseError

StepCost = Callable[[int], float]
"""Seconds (or any unit) of a target step over this many rows."""


def expected_tokens(acceptance: float | Sequence[float], k: int) -> float:
    """E(K): tokens per verify step (the accepted drafts plus the bonus or recovered token)."""
    rates = _rates(acceptance, k)
    total, run = 1.0, 1.0
    for a in rates:
        run *= a
        total += run
    return total


def _rates(acceptance: float | Sequence[float], k: int) -> list[float]:
    if k < 0:
        raise SpecwiseError(f"K must be >= 0, got {k}")
    rates = [float(acceptance)] * k if isinstance(acceptance, (int, float)) else [float(a) for a in acceptance]
    if any(not 0.0 <= a <= 1.0 for a in rates):
        raise SpecwiseError(f"acceptance must be in [0, 1], got {acceptance}")
    if len(rates) < k:  # per-position rates shorter than K: the last one holds beyond
        if not rates:
            raise SpecwiseError("give at least one acceptance rate")
        rates += [rates[-1]] * (k - len(rates))
    return rates[:k]


def linear_cost(points: dict[int, float]) -> StepCost:
    """A step cost through measured (rows, time) points, piecewise linear, extended
    along its last segment, flat below the first point (one point: flat, the
    memory-bound model where a verify step costs one target step). A measured point
    cheaper than one with fewer rows is noise, and is raised to it."""
    rows = sorted(points)
    if not rows or rows[0] < 1 or any(points[r] <= 0 for r in rows):
        raise SpecwiseError("a verify-cost curve needs rows >= 1 with positive times")
    times = list(itertools.accumulate((points[r] for r in rows), max))  # more rows never cost less: noise in a profile does

    def cost(n: int) -> float:
        if len(rows) == 1 or n <= rows[0]:
            return times[0]
        i = min(bisect.bisect_left(rows, n), len(rows) - 1)
        r0, r1, t0, t1 = rows[i - 1], rows[i], times[i - 1], times[i]
        return t0 + (t1 - t0) * (n - r0) / (r1 - r0)

    return cost


@dataclass(slots=True, frozen=True)
class MoE:
    experts: int
    top_k: int
    expert_share: float = 0.66
    """Fraction of one token's weight bytes that sit in its experts (the rest is
    attention and shared layers, read once per step whatever the rows)."""

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.experts:
            raise SpecwiseError(f"MoE top-k must be in 1..experts ({self.experts}), got {self.top_k}")
        if not 0.0 <= self.expert_share <= 1.0:
            raise SpecwiseError(f"expert share must be in [0, 1], got {self.expert_share}")

    def distinct(self, rows: int) -> float:
        """Experts touched by ``rows`` rows (uniform routing), per layer."""
        return self.experts * (1.0 - (1.0 - self.top_k / self.experts) ** rows)

    def scale(self, cost: StepCost) -> StepCost:
        """A dense step cost turned MoE: the expert part grows with the experts touched."""
        return lambda rows: cost(rows) * ((1.0 - self.expert_share) + self.expert_share * self.distinct(rows) / self.top_k)


def speedup(acceptance: float | Sequence[float], k: int, cost: StepCost, draft_cost: float = 0.0, batch: int = 1) -> float:
    if batch < 1:
        raise SpecwiseError(f"batch must be >= 1, got {batch}")
    if draft_cost < 0:
        raise SpecwiseError(f"draft cost must be >= 0, got {draft_cost}")
    plain = cost(batch)
    return expected_tokens(acceptance, k) * plain / (cost(batch * (k + 1)) + k * draft_cost * plain)


def best_k(acceptance: float | Sequence[float], max_k: int, cost: StepCost, draft_cost: float = 0.0, batch: int = 1) -> tuple[int, float]:
    """The K in 0..max_k with the highest speedup (0: plain)."""
    options = [(k, speedup(acceptance, k, cost, draft_cost, batch)) for k in range(max_k + 1)]
    return max(options, key=lambda kv: kv[1])


def break_even(k: int, cost: StepCost, draft_cost: float = 0.0, batch: int = 1, tol: float = 1e-6) -> float | None:
    """The acceptance (the same at every position) at which K drafts just pay for
    themselves; None if even acceptance 1 does not."""
    if k == 0:
        return 0.0
    if speedup(1.0, k, cost, draft_cost, batch) < 1.0:
        return None
    lo, hi = 0.0, 1.0
    while hi - lo > tol:  # the speedup grows with acceptance
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if speedup(mid, k, cost, draft_cost, batch) < 1.0 else (lo, mid)
    return round(hi, 4)


def crossover(acceptance: float | Sequence[float], max_k: int, cost: StepCost, draft_cost: float, batches: Sequence[int]) -> int | None:
    """The first batch size (of those given, ascending) at which no K > 0 beats plain."""
    for b in sorted(batches):
        if best_k(acceptance, max_k, cost, draft_cost, b)[0] == 0:
            return b
    return None
