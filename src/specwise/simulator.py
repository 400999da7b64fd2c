"""`specwise simulate`: the continuous-batching server at loads a map did not measure.

A discrete-event simulation that runs the real scheduler (admission, the
chunked-prefill budget, the per-policy choice of K) and the real policies on
a virtual clock, over a simulated engine: a step's time comes from a cost
model fitted to the steps the map measured (time against rows and context),
and each draft is accepted with the measured per-segment, per-position rates
of that config. Requests replay the measured workload's segments and prompt
and output lengths, in order. Seeded; several runs give a spread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from specwise.api import MAX_SPECULATIVE_TOKENS
from specwise.errors import SpecwiseError
from specwise.mapper.arrivals import arrival_times
from specwise.mapper.measures import SLO, rows
from specwise.mapper.records import Load, MapConfig, Record, Run, WorkItem
from specwise.policy import AdaptivePolicy, CostModel, FixedPolicy, Policy
from specwise.prompts import Request
from specwise.sampling import SamplingParams
from specwise.scheduler import Scheduler, SchedulerConfig
from specwise.sequence import Sequence



@dataclass(slots=True)
class StepFit:
    """Target step time = base + per_row * rows + per_context * context tokens (least
    squares on the measured steps, terms that come out negative dropped)."""

    base: float
    per_row: float
    per_context: float

    @classmethod
    def fit(cls, samples: list[list[float]]) -> StepFit:
        if len(samples) < 8:
            raise SpecwiseError("the calibration holds too few measured steps to fit a step cost (map more requests)")
        data = np.asarray(samples, dtype=float)
        rows_, context, seconds = data[:, 0], data[:, 3], data[:, 4]
        terms = [np.ones_like(rows_), rows_, context]
        keep = [0, 1, 2]
        while True:
            coef, *_ = np.linalg.lstsq(np.stack([terms[i] for i in keep], axis=1), seconds, rcond=None)
            negative = [i for i, c in zip(keep, coef) if c < 0 and i != 1]
            if not negative:
                break
            keep.remove(negative[0])
        full = dict(zip(keep, coef))
        return cls(max(full.get(0, 0.0), 0.0), max(full.get(1, 0.0), 1e-6), full.get(2, 0.0))

    def __call__(self, rows_: int, context: int) -> float:
        return self.base + self.per_row * rows_ + self.per_context * context


@dataclass(slots=True)
class Acceptance:
    """One config's drafting on one segment: how often a step gets drafts at each
    position, and the chance each is accepted given the ones before were."""

    proposes: list[float]
    """P(the drafter proposes a draft at position j | asked for it)."""
    accepts: list[float]
    """P(draft j accepted | drafts before it accepted and j proposed)."""

    @classmethod
    def from_counts(cls, counts: dict[str, object]) -> Acceptance:
        drafted = [float(x) for x in counts.get("drafted_by_position", [])]  # type: ignore[union-attr]
        accepted = [float(x) for x in counts.get("accepted_by_position", [])]  # type: ignore[union-attr]
        steps = float(counts.get("steps", 0) or 0)  # type: ignore[arg-type]
        if not drafted or not steps:
            return cls([], [])
        proposes = [min(1.0, drafted[0] / steps)] + [drafted[j] / drafted[j - 1] if drafted[j - 1] else 0.0 for j in range(1, len(drafted))]
        accepts = []
        for j, (d, a) in enumerate(zip(drafted, accepted)):
            tested = d if j == 0 else accepted[j - 1] * (d / drafted[j - 1] if drafted[j - 1] else 0.0)
            accepts.append(min(1.0, a / tested) if tested else 0.0)
        return cls(proposes, accepts)

    def draw(self, k: int, rng: np.random.Generator) -> tuple[int, int]:
        """(drafts proposed, accepted) for a step that asked for k."""
        proposed = 0
        while proposed < k and proposed < len(self.proposes) and rng.random() < self.proposes[proposed]:
            proposed += 1
        accepted = 0
        while accepted < proposed and rng.random() < self.accepts[accepted]:
            accepted += 1
        return proposed, accepted


class Calibration:
    def __init__(self, data: dict[str, object], source: str) -> None:
        self.data, self.source = data, source
        try:
            self.segments: dict[str, dict] = data["segments"]  # type: ignore[assignment]
            self.requests: list[list] = data["requests"]  # type: ignore[assignment]
            self.profile = data["step_cost_profile"]
            self.samples = data["steps"]["samples"]  # type: ignore[index]
            self.settings: dict = data.get("scheduler", {})  # type: ignore[assignment]
        except (KeyError, TypeError):
            raise SpecwiseError(f"{source} is not a calibration of the in-process engine (written by specwise map without --endpoint)") from None
        if not self.requests:
            raise SpecwiseError(f"{source} holds no measured requests")
        self.fit = StepFit.fit(self.samples)
        drafts = [s[5] / max(1, s[0]) for s in self.samples if s[5] > 0]
        self.draft_round_s = float(np.median(drafts)) if drafts else 0.0

    @classmethod
    def load(cls, path: Path, *, force: bool = False, model: str | None = None) -> Calibration:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SpecwiseError(f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise SpecwiseError(f"{path} is not JSON ({exc.msg})") from None
        if not isinstance(data, dict) or data.get("version") != 2:
            raise SpecwiseError(f"{path} is not a calibration this specwise reads (version 2, written by specwise map)")
        if not force:
            _check_origin(data, str(path), model)
        return cls(data, str(path))

    def configs(self) -> list[MapConfig]:
        return [MapConfig(**c) for c in self.data.get("configs", [])]  # type: ignore[union-attr]

    def acceptance(self, config: MapConfig, segment: str) -> Acceptance:
        by_config = self.segments.get(segment, {}).get("acceptance", {})
        counts = by_config.get(config.name) or next((c for c in by_config.values() if c.get("drafter") == config.drafter), None)
        if counts is None:
            raise SpecwiseError(f"the calibration has no acceptance for drafter {config.drafter!r} on segment {segment!r}: map that config first")
        return Acceptance.from_counts(counts)


def _check_origin(data: dict, source: str, model: str | None) -> None:
    """Refuse a calibration from another machine, kernel build or model (unless --force)."""
    from specwise.mapper.calibration import machine
    from specwise.models import native

    here, there = machine(), data.get("machine", {})
    for key, now in (("cpu", here["cpu"]), ("cores", here["cores"]), ("kernel_build", native.build_id())):
        if there.get(key) != now:
            raise SpecwiseError(f"{source} was measured with {key} {there.get(key)!r}, this machine has {now!r}: its costs do not hold here (--force to use it anyway)")
    if model is not None and data.get("model", {}).get("name") != Path(model).name:
        raise SpecwiseError(f"{source} is a calibration of {data.get('model', {}).get('name')!r}, not {Path(model).name!r} (--force to use it anyway)")


class _Drafter:
    """Stands in for a drafter: the policy keys its statistics by the name."""

    needs_features = False

    def __init__(self, name: str) -> None:
        self.name = name


class SimEngine:
    """What the scheduler needs of an engine, on the virtual clock."""

    def __init__(self, cal: Calibration, config: MapConfig, slots: int, max_len: int, rng: np.random.Generator) -> None:
        self.cal, self.config, self.rng = cal, config, rng
        self.cache = SimpleNamespace(num_slots=slots, lengths=[0] * slots, max_len=max_len)
        self.free = list(range(slots))[::-1]
        self.now = 0.0
        self.last_draft_s: dict[str, float] = {}
        self.last_rows = 0
        self.target: dict[Sequence, int] = {}
        self.first_token: dict[Sequence, float] = {}
        self.acceptance: dict[str, Acceptance] = {}

    def clock(self) -> float:
        return self.now

    def admit(self, seq: Sequence) -> None:
        seq.slot = self.free.pop()
        self.cache.lengths[seq.slot] = 0
        seq.stats.prompt_tokens = seq.num_prompt

    def pending(self, seq: Sequence) -> int:
        return len(seq.token_ids) - self.cache.lengths[seq.slot]

    @staticmethod
    def decoding(seq: Sequence) -> bool:
        return len(seq.token_ids) > seq.num_prompt

    def max_draft(self, seq: Sequence) -> int:
        left = self.target[seq] - len(seq.output_ids) - 1
        return max(0, min(left, self.cache.max_len - len(seq.token_ids)))

    def step(self, seqs: Seq[Sequence], ks: Seq[int], chunks: Seq[int]) -> tuple[list[int], list[int]]:
        draws = []
        for seq, k, chunk in zip(seqs, ks, chunks):
            emits = chunk == self.pending(seq)
            k = min(k, self.max_draft(seq)) if emits and self.decoding(seq) and seq.drafter is not None else 0
            draws.append((emits, *self._acceptance(seq).draw(k, self.rng)) if k else (emits, 0, 0))
        rows_ = sum(chunks) + sum(p for _, p, _ in draws)
        context = sum(self.cache.lengths[s.slot] + c for s, c in zip(seqs, chunks))
        rounds = max((p for _, p, _ in draws), default=0)
        draft_s = rounds * self.cal.draft_round_s * (1 if self.config.speculates else 0)
        self.now += self.cal.fit(rows_, context) + draft_s
        self.last_draft_s = {self.config.drafter: draft_s} if draft_s else {}
        self.last_rows = rows_
        drafted, accepted = [], []
        for seq, chunk, (emits, proposed, n) in zip(seqs, chunks, draws):
            prompt = not self.decoding(seq)
            self.cache.lengths[seq.slot] += chunk + n
            if emits:
                if not prompt:
                    seq.stats.record_step(proposed, n)
                new = min(n + 1, self.target[seq] - len(seq.output_ids))
                seq.token_ids += [1] * new
                seq.stats.new_tokens += new
                if prompt:
                    self.first_token[seq] = self.now
                if len(seq.output_ids) >= self.target[seq]:
                    seq.finish_reason = "length"
            drafted.append(proposed)
            accepted.append(n)
        return drafted, accepted

    def _acceptance(self, seq: Sequence) -> Acceptance:
        segment = seq.segment or "default"
        if segment not in self.acceptance:
            self.acceptance[segment] = self.cal.acceptance(self.config, segment)
        return self.acceptance[segment]

    def finish(self, seq: Sequence, *, keep: bool = True) -> None:
        if seq.slot >= 0:
            self.free.append(seq.slot)
            seq.slot = -1


def _policy(cal: Calibration, config: MapConfig) -> Policy | None:
    if not config.speculates:
        return None
    if config.policy == "fixed":
        return FixedPolicy(MAX_SPECULATIVE_TOKENS)
    profile = cal.profile
    return AdaptivePolicy(CostModel(list(profile["rows"]), list(profile["seconds"])), max_k=MAX_SPECULATIVE_TOKENS)  # type: ignore[index]


def simulate_run(cal: Calibration, config: MapConfig, load: Load, seed: int, *, max_num_seqs: int = 16, repeat: int = 0) -> Run:
    """One run of the measured workload under one config at one load."""
    rng = np.random.default_rng(seed)
    slots = load.concurrency or max_num_seqs
    max_len = int(cal.settings.get("max_model_len", 2048))
    engine = SimEngine(cal, config, slots, max_len, rng)
    sched = Scheduler(engine, SchedulerConfig(slots, max(int(cal.settings.get("max_batched_tokens", 256)), slots + 1)), clock=engine.clock)  # type: ignore[arg-type]
    policy, drafter = _policy(cal, config), _Drafter(config.drafter) if config.speculates else None
    items = [WorkItem(Request(id=str(i), prompt="x", segment=seg)) for i, (seg, _, _) in enumerate(cal.requests)]
    arrivals = arrival_times(items, load, seed)
    seqs = []
    for i, (segment, prompt_tokens, output_tokens) in enumerate(cal.requests):
        seq = Sequence(str(i), [1] * max(1, int(prompt_tokens)), max(1, int(prompt_tokens)), SamplingParams(max_tokens=max(1, int(output_tokens))), segment=segment)
        seq.drafter, seq.policy, seq.num_speculative_tokens = drafter, policy, config.num_speculative_tokens
        engine.target[seq] = max(1, int(output_tokens))
        seqs.append(seq)
    submitted: dict[Sequence, float] = {}
    queue = list(range(len(seqs)))
    done: list[Sequence] = []

    def submit(i: int) -> None:
        submitted[seqs[i]] = engine.now
        sched.submit(seqs[i])

    if arrivals is None:  # closed loop: N in flight, the next sent as one ends
        for _ in range(min(slots, len(queue))):
            submit(queue.pop(0))
    while len(done) < len(seqs):
        if arrivals is not None:
            while queue and arrivals[queue[0]] <= engine.now:
                submit(queue.pop(0))
            if not sched.has_work():
                engine.now = max(engine.now, arrivals[queue[0]])
                continue
        for seq in sched.step():
            done.append(seq)
            if arrivals is None and queue:
                submit(queue.pop(0))
    failed = next((s for s in seqs if s.error is not None), None)
    if failed is not None:
        raise RuntimeError(f"the simulated scheduler failed: {failed.error}") from failed.error
    records = []
    for seq in seqs:
        start = submitted[seq] if arrivals is not None else seq.started_at  # as the engine target counts
        end = seq.started_at + seq.stats.wall_s
        records.append(Record(seq.request_id, seq.segment or "default", seq.num_prompt, len(seq.output_ids), submitted[seq],
                              engine.first_token[seq] - start, end - start, finish_reason="length", drafted=seq.stats.drafted,
                              accepted=seq.stats.accepted, drafted_by_position=list(seq.stats.drafted_by_position),
                              accepted_by_position=list(seq.stats.accepted_by_position), steps=seq.stats.steps))  # fmt: skip
    elapsed = max(r.sent_s + r.latency_s for r in records) if arrivals is not None else engine.now
    return Run(config, load, records, elapsed, repeat)


def simulate(cal: Calibration, configs: Seq[MapConfig], loads: Seq[Load], *, runs: int = 3, seed: int = 0, slo: SLO | None = None,
             max_num_seqs: int = 16) -> list[dict[str, object]]:  # fmt: skip
    """ROWs (as a map writes them, marked simulated) over ``runs`` seeded runs each."""
    if runs < 1:
        raise SpecwiseError(f"--runs must be >= 1, got {runs}")
    out = []
    for load in loads:
        sims = [simulate_run(cal, c, load, seed + r, max_num_seqs=max_num_seqs, repeat=r) for r in range(runs) for c in configs]
        for row in rows(sims, slo or SLO()):
            row["simulated"] = True
            out.append(row)
    return out
