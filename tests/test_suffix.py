"""The suffix drafter: what it proposes and with what confidence, its bounds and
eviction, its policy calibration, and lossless decoding with it (greedy and the
target's distribution under sampling) on a tiny world without the real model."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from specwise.drafters.suffix import ORDERS, SuffixDrafter, SuffixStore
from specwise.errors import SpecwiseError
from specwise.policy import AdaptivePolicy, ConfidenceCalibration, CostModel
from specwise.sampling import SamplingParams
from specwise.sequence import Sequence
from tests.structured_util import TableModel, World, tiny_tokenizer


def _seq(tokens: list[int], prompt: int | None = None, finish: str | None = None, segment: str | None = None) -> Sequence:
    seq = Sequence("r", list(tokens), len(tokens) if prompt is None else prompt, SamplingParams(), segment=segment)
    seq.finish_reason = finish
    return seq


def _finished(store: SuffixStore, output: list[int]) -> None:
    """A request whose output was ``output`` finishes through a drafter of ``store``."""
    SuffixDrafter(store).release(_seq([1, *output], prompt=1, finish="stop"))


def test_a_repeated_output_is_drafted_for_the_next_request():
    store = SuffixStore()
    shape = [10, 11, 12, 13, 14, 15, 16, 17]
    _finished(store, shape)
    draft = SuffixDrafter(store).propose([_seq([99, 98, 10, 11, 12])], [4])[0]
    assert draft.tokens == [13, 14, 15, 16]
    assert draft.confidence == [1.0, 1.0, 1.0, 1.0]


def test_confidence_is_the_frequency_of_the_continuation_and_the_walk_stops_below_the_threshold():
    store = SuffixStore()
    for tail in ([30, 31], [30, 31], [30, 31], [40, 41]):
        _finished(store, [5, 6, 7, *tail])
    draft = SuffixDrafter(store, threshold=0.1).propose([_seq([5, 6, 7])], [4])[0]
    assert draft.tokens == [30, 31] and draft.confidence == [0.75, 1.0]
    assert SuffixDrafter(store, threshold=0.8).propose([_seq([5, 6, 7])], [4])[0].tokens == []


def test_the_longest_matching_suffix_decides():
    """Two stored contexts share "2 3" but only one matches "1 2 3": its continuation wins."""
    store = SuffixStore()
    _finished(store, [9, 2, 3, 50, 51])
    _finished(store, [9, 2, 3, 50, 51])
    _finished(store, [1, 2, 3, 60, 61])
    assert SuffixDrafter(store).propose([_seq([7, 1, 2, 3])], [2])[0].tokens == [60, 61]


def test_the_requests_own_prompt_is_drafted_from_and_indexed_incrementally():
    drafter = SuffixDrafter(SuffixStore())
    seq = _seq([1, 2, 3, 4, 5, 6, 9, 1, 2, 3])
    assert drafter.propose([seq], [3])[0].tokens == [4, 5, 6]
    seq.token_ids += [4, 5, 6, 9, 1, 2]  # as if decoded: the new tokens join the index
    assert drafter.propose([seq], [2])[0].tokens == [3, 4]
    local = drafter._local[id(seq)]
    fresh = SuffixDrafter(SuffixStore())
    fresh.propose([_seq(list(seq.token_ids))], [1])
    assert [ix.table for ix in local.indexes] == [ix.table for ix in next(iter(fresh._local.values())).indexes]


def test_memory_stays_within_its_bound_over_a_long_run():
    rng = random.Random(0)
    store = SuffixStore(max_requests=50, max_tokens=2000)
    for _ in range(600):
        _finished(store, [rng.randrange(40) for _ in range(rng.randrange(2, 120))])
        mem = store.memory()
        assert mem["requests"] <= 50 and mem["tokens"] + mem["requests"] <= 2000
        assert mem["index_entries"] <= len(ORDERS) * mem["tokens"]
    oldest = store.requests[0][0]
    assert all(p >= oldest for index in store.indexes for positions in index.table.values() for p in positions)
    assert store.memory()["approx_bytes"] < 2000 * 4 + 2 * 2000 * 136


def test_eviction_keeps_proposals_those_of_a_store_of_the_survivors():
    """After many evictions the store proposes exactly what a fresh store holding only
    the surviving requests proposes."""
    rng = random.Random(1)
    outputs = [[rng.randrange(12) for _ in range(rng.randrange(5, 60))] for _ in range(300)]
    store = SuffixStore(max_requests=40, max_tokens=1500)
    for out in outputs:
        _finished(store, out)
    survivors = outputs[-len(store.requests) :]
    fresh = SuffixStore(max_requests=40, max_tokens=1500)
    for out in survivors:
        _finished(fresh, out)
    for _ in range(200):
        ctx = [rng.randrange(12) for _ in range(rng.randrange(2, 8))]
        a = SuffixDrafter(store).propose([_seq(ctx)], [5])[0]
        b = SuffixDrafter(fresh).propose([_seq(ctx)], [5])[0]
        assert (a.tokens, a.confidence) == (b.tokens, b.confidence)


def test_unfinished_requests_are_not_remembered_and_bad_bounds_are_refused():
    store = SuffixStore()
    SuffixDrafter(store).release(_seq([1, 2, 3, 4], prompt=1, finish="error"))
    assert store.memory()["requests"] == 0
    with pytest.raises(SpecwiseError):
        SuffixStore(max_tokens=8)
    with pytest.raises(SpecwiseError):
        SuffixDrafter(store, threshold=1.5)


def test_calibration_learns_what_a_confidence_is_worth():
    cal = ConfidenceCalibration()
    assert cal.rate(0.9) == pytest.approx(0.9)  # trusts the drafter until data comes
    for _ in range(200):
        cal.observe([1.0, 1.0], accepted=0)  # "sure" drafts that the target rejects
    assert cal.rate(1.0) < 0.1


def test_the_policy_cuts_a_confident_draft_where_it_stops_paying():
    from specwise.drafters.base import Draft

    policy = AdaptivePolicy(CostModel([1, 2, 8], [1.0, 1.1, 2.0]))
    seq = _seq([1, 2, 3])
    seq.drafter = SuffixDrafter(SuffixStore())
    draft = Draft([4, 5, 6, 7], confidence=[1.0, 0.9, 0.1, 0.9])
    [kept] = policy.refine([seq], [draft], running=1, base_rows=1)
    # A third row would buy 1.0 * 0.9 * 0.1 = 0.09 tokens and cost a seventh of a step.
    assert kept.tokens == [4, 5] and kept.confidence == [1.0, 0.9]
    assert policy.choose([seq], [6]) == [6]  # a confident drafter drafts up to its K


def test_the_policy_cuts_confident_drafts_jointly_over_the_step():
    """Four sequences, each 0.7 sure of every draft: the first extra row of the step
    pays (+0.7 token for +14%), but a row each (the one-row break-even, 0.55, says
    yes to all four) costs more than the 2.8 tokens it buys."""
    from specwise.drafters.base import Draft

    policy = AdaptivePolicy(CostModel([1, 4, 5, 8, 20], [1.0, 1.24, 1.41, 2.14, 5.0]))
    seqs = [_seq([1, 2, 3]) for _ in range(4)]
    for seq in seqs:
        seq.drafter = SuffixDrafter(SuffixStore())
    assert policy.break_even(4, "suffix") < 0.7
    assert policy.choose(seqs, [4] * 4) == [4] * 4  # each may draft; refine() decides
    kept = policy.refine(seqs, [Draft([4, 5, 6, 7], confidence=[0.7] * 4) for _ in seqs], running=4, base_rows=4)
    assert sorted(len(d.tokens) for d in kept) == [0, 0, 0, 1], "the step's first extra row pays, the second does not"


# ------------------------------------------------------- lossless decoding

LETTERS = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    """A bigram target whose mass sits on four tokens, so outputs repeat and the store
    has something to draft from."""
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    v = tokenizer.vocab_size
    table = torch.full((v, v), -30.0)
    table[:, 1 : 1 + LETTERS] = torch.randn(v, LETTERS, generator=torch.Generator().manual_seed(3)) * 1.5
    return World(tokenizer, TableModel(table))


def test_greedy_with_the_suffix_drafter_equals_plain_alone_and_batched(world):
    store = SuffixStore()
    params = SamplingParams(max_tokens=30, ignore_eos=True)
    prompts = [[5 + i, 1 + i % LETTERS] for i in range(6)]
    plain = [s.output_ids for s in world.run([world.sequence(p, params) for p in prompts])]
    for batch in (1, 3, 6):
        drafter = SuffixDrafter(store)
        out = []
        for start in range(0, len(prompts), batch):
            seqs = [world.sequence(p, params, drafter, 4) for p in prompts[start : start + batch]]
            out += [s.output_ids for s in world.run(seqs)]
            assert all(s.stats.drafted for s in seqs)
        assert out == plain
    assert store.memory()["requests"] >= 12


def test_sampling_with_the_suffix_drafter_follows_the_target(world):
    """The suffix drafter's q is one-hot: rejection sampling must still emit the
    target's distribution. Joint of output tokens 2 and 3 (both drafted for, from
    the earlier samples' outputs), 6000 samples, chi-square at significance 0.001
    (df 15: 37.697)."""
    n = 6000
    drafter = SuffixDrafter(SuffixStore(), threshold=0.0)  # draft whatever matched
    params = SamplingParams(temperature=1.0, max_tokens=4, ignore_eos=True)
    generator = torch.Generator().manual_seed(21)
    prompt = [7, 1]
    counts = np.zeros((LETTERS, LETTERS))
    drafted = accepted = 0
    for _ in range(n):
        [seq] = world.run([world.sequence(prompt, params, drafter, 3, generator=generator)])
        a, b = seq.output_ids[1:3]
        counts[a - 1, b - 1] += 1
        drafted, accepted = drafted + seq.stats.drafted, accepted + seq.stats.accepted
    letters = world.model.table[:, 1 : 1 + LETTERS]
    first = torch.softmax(letters[prompt[-1]], dim=0)
    step = torch.softmax(letters[1 : 1 + LETTERS], dim=1)  # P(next | letter)
    joint = ((first @ step)[:, None] * step).numpy()
    expected = joint * n
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert drafted > n and 0 < accepted < drafted
    assert stat < 37.697, f"chi-square {stat:.1f}"


def test_auto_picks_per_segment_the_candidate_whose_drafts_the_target_emits(world):
    """Two free candidates: one drafts the target's own greedy path in segment "x" and
    noise in "y", the other the reverse. Each segment ends with its right one, and
    output equals plain's throughout."""
    from specwise.drafters.auto import AutoDrafter
    from specwise.drafters.base import Draft
    from tests.structured_util import ScriptDrafter

    table = world.model.table

    def oracle(seq: Sequence, k: int) -> list[int]:
        out, last = [], seq.token_ids[-1]
        for _ in range(k):
            last = int(table[last].argmax())
            out.append(last)
        return out

    def script(right: str):
        def fn(seq: Sequence, k: int) -> Draft:
            return Draft(oracle(seq, k) if seq.segment == right else [3] * k)

        return fn

    a, b = ScriptDrafter(script("x")), ScriptDrafter(script("y"))
    a.name, b.name = "ngram", "suffix"  # free: both scored every step
    auto = AutoDrafter([a, b])
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    for segment in ("x", "y") * 3:
        prompts = [[5, 1 + i] for i in range(LETTERS)]
        plain = [s.output_ids for s in world.run([world.sequence(p, params) for p in prompts])]
        seqs = [world.sequence(p, params, auto, 4) for p in prompts]
        for s in seqs:
            s.segment = segment
        assert [s.output_ids for s in world.run(seqs)] == plain
    assert auto.choices() == {"x": "ngram", "y": "suffix"}


def test_auto_asks_a_drafter_shared_by_several_candidates_once_a_step(world):
    """suffix, ngram and their chain: the shared drafters propose once per sequence and
    step, and each candidate's proposal is what it would have made alone."""
    from specwise.drafters.auto import AutoDrafter
    from specwise.drafters.base import Draft
    from specwise.drafters.fallback import FallbackDrafter
    from tests.structured_util import ScriptDrafter

    asked: list[str] = []

    def script(name: str, answer):
        def fn(seq: Sequence, k: int) -> Draft:
            asked.append(name)
            return Draft(answer(seq)[:k])

        return fn

    a = ScriptDrafter(script("suffix", lambda s: [7, 8] if s.token_ids[-1] % 2 else []))
    b = ScriptDrafter(script("ngram", lambda s: [9, 9, 9]))
    a.name, b.name = "suffix", "ngram"
    chain = FallbackDrafter([a, b])
    auto = AutoDrafter([chain, a, b])
    params = SamplingParams(max_tokens=8)
    seqs = [world.sequence([5, 1 + i], params, auto, 4) for i in range(4)]
    auto.propose(seqs, [4] * 4)
    assert sorted(asked) == ["ngram"] * 4 + ["suffix"] * 4
    alone = {d.name: [p.tokens for p in d.propose(seqs, [4] * 4)] for d in (chain, a, b)}
    for i, d in enumerate(auto.candidates):
        assert [auto._pending[id(s)].proposals[i] for s in seqs] == alone[d.name]


@pytest.mark.slow
def test_suffix_and_auto_are_greedy_lossless_on_the_real_model(llm, monkeypatch):
    """Alone and batched, with the adaptive policy cutting drafts by confidence; a
    second pass drafts from what the first one stored."""
    import specwise.calibrate
    from specwise import SpeculativeConfig
    from specwise.demo_prompts import DEMO_PROMPTS

    monkeypatch.setattr(specwise.calibrate, "best_drafter", lambda llm, spec: "ngram")  # no calibration run here
    params = SamplingParams(max_tokens=40, ignore_eos=True)
    plain = [r.token_ids for r in llm.generate(DEMO_PROMPTS, params)]
    for drafter in ("suffix", "suffix+ngram", "auto"):
        for policy in ("fixed", "adaptive"):
            spec = SpeculativeConfig(drafter, 4, policy=policy)
            llm.forget_traffic()
            for concurrency in (1, 4, 1):
                out = llm.generate(DEMO_PROMPTS, params, spec, concurrency=concurrency)
                assert [r.token_ids for r in out] == plain, f"{drafter} ({policy}, x{concurrency}) diverged"
            assert sum(r.stats.accepted for r in out) > 0, f"{drafter} never accepted"
    assert llm.drafters.suffix_store.memory()["requests"] > 0
