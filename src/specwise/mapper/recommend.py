"""What to run at the expected load, per segment and overall, from measured runs.

A config's gain at a load is plain's p50 latency over the config's, repeat by
repeat (each repeat ran both in the same round; outputs are identical, since
verification is lossless, so the ratio is the per-request speedup). The
recommendation is the config with the highest median gain, and only if that
gain is above 1: a config that measured slower than plain at that load is
never recommended. The crossover is the load where the best speculative
config's gain falls through 1, interpolated on a log scale between the two
measured loads around it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from specwise.errors import SpecwiseError
from specwise.mapper.measures import ALL, load_fields
from specwise.mapper.records import Load, MapConfig, Run


def _p50(run: Run, segment: str) -> float | None:
    lat = [r.latency_s for r in run.records if r.ok and (segment == ALL or r.segment == segment)]
    return float(np.median(lat)) if lat else None


class Gains:
    """Per-repeat gains of every speculative config over plain, by load and segment."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self.by: dict[tuple[str, str], list[Run]] = {}
        for run in runs:
            self.by.setdefault((run.config.name, run.load.label), []).append(run)
        self.loads = sorted({run.load for run in runs}, key=lambda load: (load.concurrency is None, load.value))
        self.configs = list(dict.fromkeys(run.config for run in runs))
        if not any(not c.speculates for c in self.configs):
            raise SpecwiseError("a map needs the plain config as its baseline: add plain to --configs")
        if not any(c.speculates for c in self.configs):
            raise SpecwiseError("no speculative config finished a run to compare with plain")

    def __call__(self, config: MapConfig, load: Load, segment: str) -> list[float]:
        plain = next(c for c in self.configs if not c.speculates)
        base, mine = self.by.get((plain.name, load.label), []), self.by.get((config.name, load.label), [])
        out = []
        for b, m in zip(sorted(base, key=lambda r: r.repeat), sorted(mine, key=lambda r: r.repeat)):
            pb, pm = _p50(b, segment), _p50(m, segment)
            if pb and pm:
                out.append(pb / pm)
        return out

    def best(self, load: Load, segment: str) -> tuple[MapConfig | None, list[float]]:
        """The speculative config with the highest median gain at this load."""
        scored = [(c, g) for c in self.configs if c.speculates and (g := self(c, load, segment))]
        if not scored:
            return None, []
        return max(scored, key=lambda cg: float(np.median(cg[1])))


def crossover(gains: Gains, segment: str, kind: str) -> tuple[MapConfig | None, float | None]:
    """The best speculative config at the lowest load, and the load past which no
    speculative config beats plain at any measured load (None: it pays at the highest;
    the lowest load itself when it never pays)."""
    loads = [ld for ld in gains.loads if (ld.concurrency is not None) == (kind == "concurrency")]
    medians = []
    for load in loads:
        config, g = gains.best(load, segment)
        medians.append((load, config, float(np.median(g)) if g else 0.0))
    if not medians:
        return None, None
    first_config = medians[0][1]
    if medians[-1][2] > 1.0:
        return first_config, None
    paying = [i for i, (_, _, g) in enumerate(medians) if g > 1.0]
    if not paying:
        return first_config, medians[0][0].value
    # The last load where it pays, and the next, past which it pays at no measured load.
    (l0, _, g0), (l1, _, g1) = medians[paying[-1]], medians[paying[-1] + 1]
    t = (g0 - 1.0) / (g0 - g1)
    return first_config, round(math.exp(math.log(l0.value) + t * (math.log(l1.value) - math.log(l0.value))), 2)


def nearest(gains: Gains, expected: Load) -> Load:
    same = [ld for ld in gains.loads if (ld.concurrency is None) == (expected.concurrency is None)]
    if not same:
        kind = "concurrency" if expected.concurrency is not None else "rate"
        raise SpecwiseError(f"the expected {kind} needs measurements at some {kind}: add --{kind} levels")
    return min(same, key=lambda ld: abs(math.log(ld.value) - math.log(expected.value)))


def recommend(runs: Sequence[Run], expected: Load | None, simulated: Sequence[Run] = ()) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    """The recommendation at the expected load and the crossover per segment ("all" too).
    ``simulated`` runs stand in for an expected load that was not measured."""
    if expected is not None and simulated and not any(r.load == expected for r in runs):
        runs = [*runs, *(r for r in simulated if r.load == expected)]
    gains = Gains(runs)
    if expected is None:  # default: the heaviest closed-loop load measured (else the highest rate)
        closed = [ld for ld in gains.loads if ld.concurrency is not None]
        expected = closed[-1] if closed else gains.loads[-1]
    at = nearest(gains, expected)
    if any(r.load == at for r in simulated) and not any(r.load == at and r not in simulated for r in runs):
        basis = f"simulated ({sum(r.load == at and not r.config.speculates for r in simulated)} seeded runs from this map's calibration; {at.label} was not measured)"
    elif at == expected:
        basis = "measured"
    else:
        basis = f"nearest measured load {at.label} (the expected {expected.label} was not measured)"
    kind = "concurrency" if at.concurrency is not None else "rate"
    segments = sorted({r.segment for run in runs for r in run.records})
    plain = next(c for c in gains.configs if not c.speculates)
    crossovers = {}
    recs = {}
    for segment in [ALL, *segments]:
        first, turn_off = crossover(gains, segment, kind)
        crossovers[segment] = {"config": first.name if first else None, kind: turn_off}
        recs[segment] = _one(gains, at, segment, plain, turn_off)
    return {"expected": load_fields(expected), "basis": basis, "overall": recs.pop(ALL), "segments": recs}, crossovers


def _one(gains: Gains, at: Load, segment: str, plain: MapConfig, turn_off: float | None) -> dict[str, object]:
    config, g = gains.best(at, segment)
    gain = float(np.median(g)) if g else 0.0
    spread = f"{min(g):.2f}-{max(g):.2f} over {len(g)} repeats" if len(g) > 1 else "one repeat"
    past = f"; it stops paying past {at.label.split('=')[0]}={turn_off:g}" if turn_off is not None else "; it still pays at the highest load measured"
    if config is None or gain <= 1.0:
        best = f" (best: {config.name} at {gain:.2f}x, {spread})" if config is not None else ""
        return {"config": plain.name, "speculate": False, "drafter": "none", "num_speculative_tokens": 0, "policy": "plain",
                "gain": 1.0, "gain_low": 1.0, "gain_high": 1.0, "turn_off_above": turn_off,
                "reason": f"no speculative config beat plain at {at.label}{best}"}  # fmt: skip
    return {"config": config.name, "speculate": True, "drafter": config.drafter, "num_speculative_tokens": config.num_speculative_tokens,
            "policy": config.policy, "gain": round(gain, 3), "gain_low": round(min(g), 3), "gain_high": round(max(g), 3),
            "turn_off_above": turn_off, "reason": f"{config.name} is {gain:.2f}x plain at {at.label} ({spread}){past}"}  # fmt: skip
