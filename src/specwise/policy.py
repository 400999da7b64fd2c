"""How far to speculate, per sequence and per step.

The adaptive policy picks, for each running sequence, the number of drafts
K that maximises expected tokens per second of the whole step, from

- acceptance estimates kept online per (drafter, segment) and per draft
  position: the chance that draft j is accepted given drafts 1..j-1 were;
- a step-cost model: measured target step time as a function of the rows in
  the step (a short profile, cached per model and machine, then updated from
  every step the engine runs);
- the drafter's measured time per drafting round (all sequences draft one
  token per round, batched), so a model drafter's cost counts against its
  drafts: a step whose longest draft is K pays K rounds.

With per-position acceptance a_1..a_K, one step of a sequence yields
E(K) = 1 + sum_j prod_{m<=j} a_m tokens (Leviathan et al. 2023 with
position-dependent rates). A step over rows R costs T(R). K = 0 for every
sequence is plain decoding, so the policy is never worse than plain by its
own estimates: it only adds drafts whose expected tokens pay for the extra
rows they cost.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from specwise.drafters.base import Draft
from specwise.sequence import Sequence


class Policy(Protocol):
    def choose(self, seqs: Seq[Sequence], max_k: Seq[int], base_rows: int = 0) -> list[int]:
        """K per sequence (0 = plain); never above max_k[i]. ``base_rows`` more rows
        (prompt chunks) share the step whatever is chosen."""
        ...

    def refine(self, seqs: Seq[Sequence], drafts: Seq[Draft], running: int, base_rows: int = 0) -> list[Draft]:
        """The drafts to verify, given what the drafter proposed (with its confidence, if
        it reports one), ``running`` sequences decoding this step and ``base_rows`` rows
        of the step outside these drafts (every sequence's chunk, other groups' drafts)."""
        ...

    def observe(
        self, seqs: Seq[Sequence], drafted: Seq[int], accepted: Seq[int], rows: int, step_s: float, draft_s: Mapping[str, float]
    ) -> None:
        """Feedback after a step: drafts verified and accepted per sequence, rows, the
        target forward's time and the drafting time per drafter name."""
        ...


@dataclass(slots=True)
class FixedPolicy:
    """Always K drafts (0 = plain decoding)."""

    k: int

    def choose(self, seqs: Seq[Sequence], max_k: Seq[int], base_rows: int = 0) -> list[int]:
        return [min(self.k, m) for m in max_k]

    def refine(self, seqs: Seq[Sequence], drafts: Seq[Draft], running: int, base_rows: int = 0) -> list[Draft]:
        return list(drafts)

    def observe(
        self, seqs: Seq[Sequence], drafted: Seq[int], accepted: Seq[int], rows: int, step_s: float, draft_s: Mapping[str, float]
    ) -> None:
        pass


@dataclass(slots=True)
class CostModel:
    """Step time (s) by rows in the step: the measured profile, piecewise linear, times
    a correction that tracks what the engine observes: a + b * log2(rows), fitted to
    observed over profiled time by decayed least squares, with b >= 0.

    Two parameters, not one correction per point: steps of the same row count differ
    with context length and batch mix, and per-point corrections from such
    samples bent the curve out of shape (measured: 6 rows "cheaper" than 5). One
    scale alone kept the shape profiled on a quiet machine: measured an hour
    later on the same one, 5 rows cost 1.47x a row where the profile said 1.18x,
    and drafts priced by the profile cost more than they bought. The tilt is
    never negative: more rows are never believed cheaper, relative to one, than
    profiled, so a misfit cannot make drafts look free.
    """

    rows: list[int]
    seconds: list[float]
    decay: float = 0.99
    prior_weight: float = 20.0
    """Pseudo-observations holding the tilt at 0 until rows of different counts are seen."""
    _sums: list[float] = field(default_factory=lambda: [0.0] * 5)
    """Decayed sums of w, w*u, w*u^2, w*y, w*u*y (u = log2 rows, y = observed / profiled)."""
    _fit: tuple[float, float] = (1.0, 0.0)

    def __post_init__(self) -> None:
        if not self.rows or sorted(self.rows) != self.rows or len(self.rows) != len(self.seconds):
            raise ValueError("cost model needs increasing row counts with one time each")
        # A step of more rows never costs less; a profile that says so measured noise
        # (seen: 4 rows 16% cheaper than 1), and would make extra drafts look free.
        self.seconds = list(itertools.accumulate(self.seconds, max))

    def profiled(self, rows: int) -> float:
        i = bisect.bisect_left(self.rows, rows)
        if i < len(self.rows) and self.rows[i] == rows:
            return self.seconds[i]
        if i == 0:
            return self.seconds[0]
        if i == len(self.rows):  # extrapolate along the last segment
            i -= 1
        r0, r1, s0, s1 = self.rows[i - 1], self.rows[i], self.seconds[i - 1], self.seconds[i]
        return s0 + (s1 - s0) * (rows - r0) / (r1 - r0)

    def __call__(self, rows: int) -> float:
        a, b = self._fit
        return self.profiled(rows) * (a + b * math.log2(max(rows, 1)))

    def update(self, rows: int, seconds: float) -> None:
        u, y, sums = math.log2(max(rows, 1)), seconds / self.profiled(rows), self._sums
        for j, v in enumerate((1.0, u, u * u, y, u * y)):
            sums[j] = self.decay * sums[j] + v
        w, wu, wuu, wy, wuy = sums
        mean_u, mean_y = wu / w, wy / w
        b = max(0.0, (wuy - w * mean_u * mean_y) / (wuu - w * mean_u**2 + self.prior_weight))
        self._fit = (max(mean_y - b * mean_u, 0.5 * mean_y), b)  # a tilt from far rows must not zero one row

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": self.rows, "seconds": self.seconds}))

    @classmethod
    def load(cls, path: Path) -> CostModel:
        data = json.loads(path.read_text())
        return cls(list(data["rows"]), list(data["seconds"]))


@dataclass(slots=True)
class AcceptanceStats:
    """Per-position conditional acceptance P(draft j accepted | drafts < j accepted),
    decayed so it follows drift.

    Each position's observations are shrunk toward the estimate of the position
    before it (position 0 toward ``prior_accept``), with ``prior_weight``
    pseudo-observations: deep positions are tested rarely (only after every
    earlier draft was accepted), and a flat prior of one half made them look
    worse than they are, which cut K short.
    """

    max_k: int
    prior_accept: float = 0.5
    prior_weight: float = 2.0
    decay: float = 0.995
    accepted: list[float] = field(default_factory=list)
    drafted: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.accepted = [0.0] * self.max_k
        self.drafted = [0.0] * self.max_k

    def rates(self) -> list[float]:
        out, prior = [], self.prior_accept
        for a, d in zip(self.accepted, self.drafted):
            prior = (a + self.prior_weight * prior) / (d + self.prior_weight)
            out.append(prior)
        return out

    def observe(self, drafted: int, accepted: int) -> None:
        # Position j is put to the test only if drafts 0..j-1 were all accepted.
        for j in range(min(drafted, accepted + 1, self.max_k)):
            self.drafted[j] = self.decay * self.drafted[j] + 1
            self.accepted[j] = self.decay * self.accepted[j] + (j < accepted)


@dataclass(slots=True)
class ConfidenceCalibration:
    """P(a draft token is accepted | the drafter's confidence c in it, the drafts
    before it accepted), per tenth of c, decayed. Until a bin has data it trusts
    the drafter (prior c): a suffix count of 1 of 1 says 1.0, and what that is
    worth is learned per segment from what is accepted."""

    bins: int = 10
    prior_weight: float = 4.0
    decay: float = 0.998
    accepted: list[float] = field(default_factory=list)
    tested: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.accepted = [0.0] * self.bins
        self.tested = [0.0] * self.bins

    def _bin(self, c: float) -> int:
        return min(self.bins - 1, max(0, int(c * self.bins)))

    def rate(self, c: float) -> float:
        b = self._bin(c)
        return (self.accepted[b] + self.prior_weight * c) / (self.tested[b] + self.prior_weight)

    def observe(self, confidence: Seq[float], accepted: int) -> None:
        for j, c in enumerate(confidence[: accepted + 1]):  # tested only while the earlier ones held
            b = self._bin(c)
            self.tested[b] = self.decay * self.tested[b] + 1
            self.accepted[b] = self.decay * self.accepted[b] + (j < accepted)


@dataclass(slots=True)
class AdaptivePolicy:
    """Maximise expected tokens per second of each step (see the module docstring).

    One instance lives as long as the engine loop and serves every request that
    asks for it, whatever its drafter: acceptance is kept per (drafter, segment)
    and drafting time per drafter, so it learns from all traffic."""

    cost: CostModel
    max_k: int = 8
    """Positions tracked; a sequence's own cap (its K) is passed to ``choose``."""
    round_s: dict[str, float] = field(default_factory=dict)
    """Measured time of one drafting round per drafter (moving average; near 0 for prompt lookup)."""
    probe_every: int = 16
    """Steps between one-draft probes of a sequence that speculation was turned off for,
    so its acceptance estimate can recover."""
    stats: dict[tuple[str, str], AcceptanceStats] = field(default_factory=dict)
    """Keyed by (drafter name, segment)."""
    calibration: dict[tuple[str, str], ConfidenceCalibration] = field(default_factory=dict)
    """For drafters that report confidence, keyed like ``stats``."""
    _step: int = 0
    _verifying: dict[int, list[float]] = field(default_factory=dict)
    """Confidence of the drafts each sequence sends to verification this step."""

    def _stats(self, seq: Sequence) -> AcceptanceStats:
        key = (_drafter_name(seq), seq.segment or "")
        if key not in self.stats:
            self.stats[key] = AcceptanceStats(self.max_k)
        return self.stats[key]

    def _calibration(self, seq: Sequence) -> ConfidenceCalibration:
        return self.calibration.setdefault((_drafter_name(seq), seq.segment or ""), ConfidenceCalibration())

    def refine(self, seqs: Seq[Sequence], drafts: Seq[Draft], running: int, base_rows: int = 0) -> list[Draft]:
        """Cut the drafts that carry confidence where they stop paying, jointly: the j-th
        draft row of a sequence is worth prod_{m<=j} p_m expected tokens (p the calibrated
        confidence), and the step keeps the most valuable rows, as many as maximise
        expected tokens per second over the whole step's rows.

        Jointly, not one break-even per row: the first extra row of a step is the
        cheapest (measured: 4 -> 5 rows +14%, 8 -> 9 rows +10% of a far longer
        step), and cutting each sequence at the one-row break-even let four
        sequences draft 16 rows that cost more than they bought (0.90x plain)."""
        confident = {i for i, (seq, d) in enumerate(zip(seqs, drafts)) if d.tokens and _reports_confidence(seq)}
        fixed_rows, tokens = base_rows, float(running)
        candidates = []  # (value of the row, position in the draft, sequence)
        for i, (seq, draft) in enumerate(zip(seqs, drafts)):
            fixed_rows += draft.forced
            tokens += draft.forced
            if i not in confident:
                fixed_rows += len(draft.tokens) - draft.forced  # choose() sized it already
                continue
            if draft.confidence is not None:
                calibration = self._calibration(seq)
                rates = [calibration.rate(c) for c in draft.confidence[draft.forced :]]
            else:  # a chain's other drafter answered: its per-position acceptance stands in
                rates = self._stats(seq).rates()
            run = 1.0
            for j, rate in enumerate(rates[: len(draft.tokens) - draft.forced]):
                run *= rate
                candidates.append((run, j, i))
        candidates.sort(key=lambda c: (-c[0], c[1]))  # a sequence's values never grow: prefixes
        keep = [draft.forced for draft in drafts]
        for _, _, i in candidates[: self._paying(tokens, fixed_rows, candidates)]:
            keep[i] += 1
        out = []
        for i, (seq, draft) in enumerate(zip(seqs, drafts)):
            if i not in confident:
                out.append(draft)
                continue
            if self._step % self.probe_every == 0:  # let a cut-off drafter show it improved
                keep[i] = max(keep[i], min(len(draft.tokens), draft.forced + 1))
            if draft.confidence is not None:
                self._verifying[id(seq)] = draft.confidence[draft.forced : keep[i]]
            out.append(draft if keep[i] == len(draft.tokens) else draft.cut(keep[i]))
        return out

    def choose(self, seqs: Seq[Sequence], max_k: Seq[int], base_rows: int = 0) -> list[int]:
        """Exact for the model: each sequence's marginal gain from one more draft
        (prod of its rates) never grows, so the best allocation of D drafts is the
        D largest marginal gains; then pick the D with the most tokens per second."""
        self._step += 1
        n = len(seqs)
        marginals = []  # (gain of the j-th draft of sequence i, j, i)
        sure = [i for i, seq in enumerate(seqs) if _reports_confidence(seq)]
        for i, (seq, cap) in enumerate(zip(seqs, max_k)):
            if i in sure:  # drafts up to its K; refine() cuts by confidence
                continue
            run = 1.0
            for j, a in enumerate(self._stats(seq).rates()[: min(self.max_k, cap)]):
                run *= a
                marginals.append((run, j, i))
        marginals.sort(key=lambda m: (-m[0], m[1]))
        # Prompt rows are a fixed cost of the step: drafts pay for the rows they add
        # on top. Beside a long prompt chunk a draft row adds little to a long step
        # and buys tokens for the requests waiting on it (their latency); counting
        # prompt rows as output instead turned drafting off in such steps and cost
        # 5% of p50 latency at concurrency 8 (measured).
        rounds: dict[str, int] = {}  # drafting rounds per drafter: its longest draft
        round_costs, round_cost = [], 0.0
        for _, j, i in marginals:
            name = _drafter_name(seqs[i])
            if j + 1 > rounds.get(name, 0):
                round_cost += self.round_s.get(name, 0.0) * (j + 1 - rounds.get(name, 0))
                rounds[name] = j + 1
            round_costs.append(round_cost)
        ks = [0] * n
        for _, _, i in marginals[: self._paying(float(n), n + base_rows, marginals, round_costs)]:
            ks[i] += 1
        for i in sure:  # up to K where even a certain draft pays for its row at this load
            ks[i] = max_k[i] if self.break_even(n, _drafter_name(seqs[i])) < 1.0 else 0
        if self._step % self.probe_every == 0:
            ks = [k or min(1, cap) for k, cap in zip(ks, max_k)]
        return ks

    def observe(
        self, seqs: Seq[Sequence], drafted: Seq[int], accepted: Seq[int], rows: int, step_s: float, draft_s: Mapping[str, float]
    ) -> None:
        longest: dict[str, int] = {}
        for seq, d, a in zip(seqs, drafted, accepted):
            confidence = self._verifying.pop(id(seq), None)
            if confidence is not None and d:
                self._calibration(seq).observe(confidence[:d], a)
            if d:
                self._stats(seq).observe(d, a)
                name = _drafter_name(seq)
                longest[name] = max(longest.get(name, 0), d)
        self.cost.update(rows, step_s)
        for name, d in longest.items():
            per_round = draft_s.get(name, 0.0) / d
            old = self.round_s.get(name)
            self.round_s[name] = per_round if old is None else 0.9 * old + 0.1 * per_round

    def _paying(self, tokens: float, rows: int, ranked: Seq[tuple[float, int, int]], extra_s: Seq[float] = ()) -> int:
        """How many of the ranked draft rows (value first) to verify: the count that
        maximises expected tokens per second, over ``tokens`` sure tokens and ``rows``
        rows the step has anyway; ``extra_s[d - 1]``: drafting time the first d cost."""
        best_value, best_d = tokens / self.cost(rows), 0
        for d, (gain, _, _) in enumerate(ranked, 1):
            tokens += gain
            value = tokens / (self.cost(rows + d) + (extra_s[d - 1] if extra_s else 0.0))
            if value > best_value:
                best_value, best_d = value, d
        return best_d

    def break_even(self, running: int, drafter: str) -> float:
        """The acceptance of one more draft below which it loses at this load: with
        ``running`` sequences decoding, one draft row buys its acceptance in tokens
        and costs a row plus a drafting round."""
        n = max(running, 1)
        plain = self.cost(n)
        return min(1.0, max(0.0, n * (self.cost(n + 1) + self.round_s.get(drafter, 0.0)) / plain - n))


def _reports_confidence(seq: Sequence) -> bool:
    return getattr(seq.drafter, "reports_confidence", False)


def _drafter_name(seq: Sequence) -> str:
    return seq.drafter.name if seq.drafter is not None else "none"
