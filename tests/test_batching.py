"""Ragged and continuous batching are exact: each request yields what it yields alone."""

from __future__ import annotations

import pytest

from specwise import Request, SamplingParams, SpeculativeConfig
from specwise.demo_prompts import DEMO_PROMPTS
from specwise.engine import Engine
from specwise.kv_cache import KVCache
from specwise.policy import FixedPolicy
from specwise.scheduler import Scheduler, SchedulerConfig
from specwise.sequence import Sequence
from tests.conftest import read_jsonl

pytestmark = pytest.mark.slow


class PerRequestK(FixedPolicy):
    """A different K for each request (0 = plain), so one batch mixes draft lengths."""

    def __init__(self, ks: dict[str, int]) -> None:
        super().__init__(0)
        self.ks = ks

    def choose(self, seqs, max_k, base_rows=0):
        return [min(self.ks[s.request_id], m) for s, m in zip(seqs, max_k)]


def _requests(n: int) -> list[Request]:
    try:
        recs = read_jsonl("spec_bench_dev.jsonl")
        reqs = [Request(id=f"sb{r['question_id']}", prompt=r["turns"][0][:1500], segment=r["category"]) for r in recs[::12]]
    except pytest.skip.Exception:
        reqs = []
    reqs += [Request(id=f"demo-{r.id}-{i}", prompt=r.prompt + " " * i, segment=r.segment) for i in range(4) for r in DEMO_PROMPTS]
    return reqs[:n]


def test_batch_of_16_mixed_k_equals_single_sequence_outputs(llm):
    reqs = _requests(16)
    params = SamplingParams(max_tokens=40)
    solo = {r.id: llm.generate([r], params, None)[0].token_ids for r in reqs}
    ks = {r.id: [0, 1, 3, 6][i % 4] for i, r in enumerate(reqs)}
    batched = llm.generate(reqs, params, SpeculativeConfig("ngram", 6), concurrency=16, policy=PerRequestK(ks))
    assert len(reqs) == 16
    for r, out in zip(reqs, batched):
        assert out.token_ids == solo[r.id], f"{r.id} (K={ks[r.id]}) differs when batched"
    assert sum(o.stats.accepted for o in batched) > 0


def test_requests_joining_and_leaving_mid_flight_change_nothing(llm):
    reqs = _requests(10)
    lengths = [8, 40, 16, 64, 24, 8, 48, 32, 12, 56]
    params = [SamplingParams(max_tokens=n) for n in lengths]  # different budgets: requests leave at different steps
    solo = [llm.generate([r], p, None)[0].token_ids for r, p in zip(reqs, params)]
    arrivals = [0.0, 0.0, 0.05, 0.1, 0.1, 0.3, 0.4, 0.4, 0.6, 0.9]
    spec = SpeculativeConfig("ngram", 4, policy="adaptive")
    out = llm.generate(reqs, params, spec, concurrency=4, arrivals=arrivals)
    for r, s, o in zip(reqs, solo, out):
        assert o.token_ids == s, f"{r.id} changed when others joined and left"
    assert max(o.stats.queue_s for o in out) > 0, "with 10 requests and 4 slots some must have queued"


def test_a_second_turn_that_outgrows_the_context_ends_that_conversation_only(llm):
    long_turn = "Repeat this. " * 700  # well over the 2048-token context with the history
    reqs = [
        Request(id="grows", turns=["Say hello.", long_turn]),
        Request(id="fine", turns=["Name a colour.", "Name another."]),
    ]
    params = SamplingParams(max_tokens=8)
    grows, fine = llm.generate(reqs, params, SpeculativeConfig("ngram", 3), concurrency=2)
    assert grows.finish_reason == "length" and len(grows.turn_texts) == 1
    assert len(fine.turn_texts) == 2
    [alone] = llm.generate([reqs[1]], params)
    assert fine.token_ids == alone.token_ids


def test_prompts_fed_in_chunks_beside_decoding_sequences_change_nothing(llm):
    """A step budget far below the prompt lengths: every prompt is fed over several
    steps while other sequences decode (and draft) in the same steps."""
    reqs = _requests(6)
    params = SamplingParams(max_tokens=24)
    solo = [llm.generate([r], params, None)[0].token_ids for r in reqs]
    budget, llm.max_batched_tokens = llm.max_batched_tokens, 7
    try:
        arrivals = [0.0, 0.0, 0.2, 0.2, 0.4, 0.6]
        for spec in (SpeculativeConfig("ngram", 4), SpeculativeConfig("ngram+eagle", 3)):
            out = llm.generate(reqs, params, spec, concurrency=3, arrivals=arrivals)
            for r, s, o in zip(reqs, solo, out):
                assert o.token_ids == s, f"{r.id} changed when its prompt was chunked ({spec.drafter})"
            assert sum(o.stats.accepted for o in out) > 0
    finally:
        llm.max_batched_tokens = budget


def test_a_conversations_next_turn_reuses_its_history_exactly(llm):
    """The second turn's prompt begins with the first turn's prompt and answer, still
    in the freed slot: it is fed from there, and answers exactly as a cold start does."""
    conv = Request(id="chat", turns=["Name three rivers in Europe.", "Which of them is the longest?"])
    params = SamplingParams(max_tokens=24)
    [warm] = llm.generate([conv], params, SpeculativeConfig("ngram", 3))
    first_prompt = len(llm.encode_messages([{"role": "user", "content": conv.turns[0]}], chat=True))
    assert warm.stats.cached_tokens > first_prompt, "the history was fed again instead of reused"
    history = [
        {"role": "user", "content": conv.turns[0]},
        {"role": "assistant", "content": warm.turn_texts[0]},
        {"role": "user", "content": conv.turns[1]},
    ]
    llm.reset_prefix_cache()  # else the slot still holds this whole history
    [cold] = llm.generate([Request(id="cold", messages=history)], params, SpeculativeConfig("ngram", 3))
    assert cold.stats.cached_tokens == 0
    assert cold.text == warm.turn_texts[1]


def test_a_long_prompt_is_fed_in_chunks_while_others_keep_decoding(llm):
    cache = KVCache(llm.config, 2, 512)
    sched = Scheduler(Engine(llm.model, llm.tokenizer, cache), SchedulerConfig(max_num_seqs=2, max_batched_tokens=16))
    params = SamplingParams(max_tokens=64, ignore_eos=True)
    short = Sequence("short", [1, 2, 3], 3, params)
    sched.submit(short)
    sched.step()
    assert len(short.output_ids) == 1
    long = Sequence("long", list(range(10, 210)), 200, params)
    sched.submit(long)
    for _ in range(5):
        sched.step()
    # Each step: one row for the decoding sequence, 15 prompt rows for the newcomer.
    assert len(short.output_ids) == 6
    assert cache.lengths[long.slot] == 75 and not long.output_ids
