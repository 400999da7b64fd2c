"""End to end: greedy speculative output is token-identical to greedy plain output."""

from __future__ import annotations

import pytest

from specwise import Request, SamplingParams, SpeculativeConfig
from tests.conftest import read_jsonl

pytestmark = pytest.mark.slow

NEW_TOKENS = 64


def _mixed_requests() -> list[tuple[Request, bool]]:
    """24 prompts: two per Spec-Bench group and category mix, six HumanEval (raw), six GSM8K (chat)."""
    out: list[tuple[Request, bool]] = []
    seen: dict[str, int] = {}
    for rec in read_jsonl("spec_bench_dev.jsonl"):
        cat = rec["category"]
        limit = 1 if cat in {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"} else 2
        if seen.get(cat, 0) < limit and len(rec["turns"][0]) < 3000:
            seen[cat] = seen.get(cat, 0) + 1
            out.append((Request(id=f"sb-{rec['question_id']}", prompt=rec["turns"][0], segment=cat), True))
    for rec in read_jsonl("humaneval_dev.jsonl")[:3]:
        out.append((Request(id=rec["task_id"], prompt=rec["prompt"], segment="humaneval"), False))
    for i, rec in enumerate(read_jsonl("gsm8k_dev.jsonl")[:3]):
        out.append((Request(id=f"gsm8k-{i}", prompt=rec["question"], segment="gsm8k"), True))
    return out


@pytest.mark.parametrize("k", [2, 5])
def test_greedy_speculative_equals_plain(llm, k):
    params = SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True)
    cases = _mixed_requests()
    assert len(cases) >= 20
    drafted = 0
    for req, chat in cases:
        [plain] = llm.generate([req], params, None, chat=chat)
        [spec] = llm.generate([req], params, SpeculativeConfig("ngram", k), chat=chat)
        assert len(plain.token_ids) == NEW_TOKENS
        assert spec.token_ids == plain.token_ids, f"{req.id} (K={k}) diverged"
        assert spec.text == plain.text
        assert spec.stats.steps < plain.stats.steps or spec.stats.accepted == 0
        drafted += spec.stats.drafted
    assert drafted > 0, "the drafter never proposed anything: the test would prove nothing"


def test_stop_string_and_eos_agree_with_plain(llm):
    params = SamplingParams(max_tokens=96, stop=("\n\n",))
    req = Request(id="stop", prompt="List three fruits, one per line, then a blank line, then three vegetables.")
    [plain] = llm.generate([req], params, None)
    [spec] = llm.generate([req], params, SpeculativeConfig("ngram", 4))
    assert spec.text == plain.text and "\n\n" not in spec.text
    assert spec.finish_reason == plain.finish_reason


def test_seeded_sampling_is_reproducible(llm):
    params = SamplingParams(temperature=0.8, top_p=0.95, top_k=50, max_tokens=32, seed=1234)
    req = Request(id="seeded", prompt="Tell me a fact about the moon.")
    spec = SpeculativeConfig("ngram", 4)
    first = llm.generate([req], params, spec)[0].token_ids
    assert llm.generate([req], params, spec)[0].token_ids == first
    other = SamplingParams(temperature=0.8, top_p=0.95, top_k=50, max_tokens=32, seed=99)
    assert llm.generate([req], other, spec)[0].token_ids != first


@pytest.mark.parametrize("k", [3, 8])
def test_greedy_speculative_equals_plain_on_builtin_prompts(llm, k):
    """Runs even where ../shared/data is absent."""
    from specwise.demo_prompts import DEMO_PROMPTS

    params = SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True)
    plain = llm.generate(DEMO_PROMPTS, params, None)
    spec = llm.generate(DEMO_PROMPTS, params, SpeculativeConfig("ngram", k))
    assert [r.token_ids for r in spec] == [r.token_ids for r in plain]
    assert sum(r.stats.accepted for r in spec) > 0
