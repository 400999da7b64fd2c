"""Slot bookkeeping of the KV cache: prefix reuse and forgetting it (no model needed)."""

from __future__ import annotations

from specwise.kv_cache import KVCache
from specwise.models.config import ModelConfig

TINY = ModelConfig(vocab_size=32, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32,
                   rope_theta=10000.0, rms_norm_eps=1e-5, max_position=64, tie_embeddings=True)  # fmt: skip


def _fill(cache: KVCache, *prompts: list[int]) -> list[int]:
    """Run the prompts side by side (each in its own slot), then free the slots."""
    slots = [cache.allocate(tokens) for tokens in prompts]
    for slot, tokens in zip(slots, prompts):
        cache.truncate(slot, len(tokens))  # as if the engine had fed them all
        cache.release(slot, tokens)
    return slots


def test_a_request_takes_the_slot_holding_its_longest_prefix():
    cache = KVCache(TINY, 2, 32)
    a, _ = _fill(cache, [1, 2, 3, 4, 5], [1, 2, 9])
    slot = cache.allocate([1, 2, 3, 4, 7, 8])
    assert slot == a and cache.lengths[slot] == 4


def test_the_last_token_is_always_fed_again_for_its_logits():
    cache = KVCache(TINY, 1, 32)
    _fill(cache, [1, 2, 3])
    slot = cache.allocate([1, 2, 3])
    assert cache.lengths[slot] == 2


def test_forget_makes_the_next_requests_start_cold():
    cache = KVCache(TINY, 2, 32)
    _fill(cache, [1, 2, 3, 4], [5, 6, 7])
    cache.forget()
    assert cache.lengths[cache.allocate([1, 2, 3, 4, 5])] == 0
    assert cache.lengths[cache.allocate([5, 6, 7, 8])] == 0
