"""Training data for the drafts: the target's answers come back in pool order and
are cached in chunks, so a larger pool answers only its new prompts."""

from __future__ import annotations

import pytest

from specwise.train import run
from specwise.train.prompt_pool import build_prompt_pool

pytestmark = pytest.mark.slow


def test_samples_follow_the_pool_and_a_larger_pool_reuses_the_smaller_ones_chunks(llm, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(run, "CHUNK", 2)
    small = run.training_samples(llm, 2, 4, seed=3, log=lambda _: None)
    assert len(list((tmp_path / "train").iterdir())) == 1
    large = run.training_samples(llm, 5, 4, seed=3, log=lambda _: None)
    assert len(list((tmp_path / "train").iterdir())) == 3  # chunks of prompts 0-1 (reused), 2-3 and 4
    pool = build_prompt_pool(5, seed=3)
    for sample, messages in zip(large, pool, strict=True):
        prompt = llm.encode_messages(messages, chat=True)
        assert sample.tokens[: sample.num_prompt].tolist() == prompt
        assert sample.features.shape == (sample.tokens.shape[0] - 1, llm.config.hidden_size)
    for a, b in zip(small, large[:2]):
        assert a.tokens.tolist() == b.tokens.tolist()
