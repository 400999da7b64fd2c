"""Training data for the drafts: the target's answers come back in pool order and
are cached in chunks, so a larger pool answers only its new prompts."""

from __future__ import annotations

import pytest

from specwise.train import run
from specwise.train.collect import collect
from specwise.train.prompt_pool import build_prompt_pool

pytestmark = pytest.mark.slow


def test_samples_follow_the_pool_and_a_larger_pool_reuses_the_smaller_ones_chunks(llm, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(run, "CHUNK", 2)
    answered: list[int] = []

    def counting_collect(llm, prompts, max_tokens, **kwargs):
        answered.append(len(prompts))
        return collect(llm, prompts, max_tokens, **kwargs)

    monkeypatch.setattr(run, "collect", counting_collect)
    small = run.training_samples(llm, 2, 4, seed=3, log=lambda _: None)
    large = run.training_samples(llm, 5, 4, seed=3, log=lambda _: None)
    assert answered == [2, 2, 1]  # prompts 0-1, then only 2-3 and 4: the first chunk came from the cache
    assert len(list((tmp_path / "train").iterdir())) == 3
    pool = build_prompt_pool(5, seed=3)
    for sample, messages in zip(large, pool, strict=True):
        prompt = llm.encode_messages(messages, chat=True)
        assert sample.tokens[: sample.num_prompt].tolist() == prompt
        assert sample.features.shape == (sample.tokens.shape[0] - 1, llm.config.hidden_size)
    for a, b in zip(small, large[:2]):
        assert a.tokens.tolist() == b.tokens.tolist()
