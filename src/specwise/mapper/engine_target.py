"""The in-process engine as a mapper target: the single-node reference.

Requests go through ``LLM.generate`` on the engine loop, as the server's do.
Closed loop: ``concurrency`` slots, so N requests are decoded together and the
next starts as one finishes; its latency counts from admission (a closed-loop
client sends the next request when one returns). Open loop: each request is
submitted at its arrival time, and its latency counts from then (queueing
for a slot included).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from specwise.api import LLM, Result, SpeculativeConfig
from specwise.mapper.arrivals import arrival_times
from specwise.mapper.records import Load, MapConfig, Record, Run, WorkItem, first_turn
from specwise.sampling import SamplingParams
from specwise.scheduler import StepSample


def spec_of(config: MapConfig) -> SpeculativeConfig | None:
    if not config.speculates:
        return None
    return SpeculativeConfig(config.drafter, config.num_speculative_tokens, policy=config.policy)


class EngineTarget:
    kind = "engine"

    def __init__(self, llm: LLM, *, max_num_seqs: int = 16) -> None:
        """``max_num_seqs``: slots for open-loop runs (a closed loop uses its concurrency)."""
        self.llm = llm
        self.max_num_seqs = max_num_seqs
        self.name = f"specwise engine (in-process, {llm.source.name})"
        self.model = llm.source.name
        self.steps: list[StepSample] = []
        """Every step of the timed runs (for the calibration)."""

    def run(
        self,
        items: Sequence[WorkItem],
        config: MapConfig,
        load: Load,
        *,
        max_tokens: int,
        seed: int = 0,
        repeat: int = 0,
        on_record: Callable[[Record], None] | None = None,
    ) -> Run:
        llm = self.llm
        spec = spec_of(config)
        requests = [first_turn(item.request) for item in items]
        params = [SamplingParams(max_tokens=item.max_tokens or max_tokens, constraint=item.request.constraint) for item in items]
        arrivals = arrival_times(items, load, seed)
        slots = load.concurrency or self.max_num_seqs
        policy = llm.make_policy(spec) if spec is not None else None  # a fresh policy: every run starts alike
        chunks: dict[str, list[float]] = {r.id: [] for r in requests}
        llm.reset_prefix_cache()  # no run finds another's prompts cached
        log = llm.loop.scheduler.step_log
        log.clear()
        start = time.perf_counter()
        results = llm.generate(
            requests, params, spec, concurrency=slots, arrivals=arrivals, policy=policy,
            on_text=lambda rid, _text: chunks[rid].append(time.perf_counter()),
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        self.steps += list(log)
        records = [self._record(r, chunks[r.id], arrivals[i] if arrivals else None) for i, r in enumerate(results)]
        if on_record is not None:
            for record in records:
                on_record(record)
        return Run(config, load, records, elapsed, repeat)

    @staticmethod
    def _record(result: Result, chunk_times: list[float], sent_s: float | None) -> Record:
        s = result.stats
        wait = s.queue_s if sent_s is not None else 0.0  # open loop: from the arrival; closed: from admission
        return Record(
            request_id=result.id, segment=result.segment or "default", prompt_tokens=s.prompt_tokens, output_tokens=len(result.token_ids),
            sent_s=sent_s or 0.0, ttft_s=wait + s.ttft_s, latency_s=wait + s.wall_s,
            chunk_gaps_s=[b - a for a, b in zip(chunk_times, chunk_times[1:])], finish_reason=result.finish_reason,
            drafted=s.drafted, accepted=s.accepted, drafted_by_position=list(s.drafted_by_position),
            accepted_by_position=list(s.accepted_by_position), steps=s.steps,
        )  # fmt: skip
