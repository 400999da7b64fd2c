"""build_prompt_pool: deterministic, sized, bounded, and mixing every task family."""

from __future__ import annotations

from collections import Counter

from specwise.train.prompt_pool import FAMILIES, MAX_CHARS, build_prompt_pool, tagged_prompts


def test_deterministic_per_seed():
    assert build_prompt_pool(50, seed=1) == build_prompt_pool(50, seed=1)
    assert build_prompt_pool(50, seed=1) != build_prompt_pool(50, seed=2)


def test_size_shape_and_length():
    pool = build_prompt_pool(300, seed=0)
    assert len(pool) == 300
    for conversation in pool:
        assert [m["role"] for m in conversation] == ["user"]
        assert 0 < len(conversation[0]["content"].strip()) <= MAX_CHARS
    assert len({c[0]["content"] for c in pool}) == 300  # no repeats


def test_every_family_in_equal_shares():
    counts = Counter(family for family, _ in tagged_prompts(200, seed=3))
    assert set(counts) == set(FAMILIES)
    assert max(counts.values()) - min(counts.values()) <= 1
