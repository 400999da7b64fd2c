"""The decoder against Hugging Face transformers, and its batch invariance."""

from __future__ import annotations

import pytest
import torch

from specwise.kv_cache import KVCache

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France? Explain in detail.",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Translate to German: The weather is nice today and we are going for a walk.",
]

# fp32 on both sides; the difference is summation order (our kernels vs MKL),
# measured at about 1e-4 on logits of magnitude ~30.
PARITY_ATOL = 1e-3


def _forward_all(llm, ids: list[int], slot: int = 0, cache: KVCache | None = None) -> torch.Tensor:
    cache = cache or KVCache(llm.config, 4, 512)
    n = len(ids)
    return llm.model.forward(torch.tensor(ids), torch.arange(n), torch.full((n,), slot), cache)


def test_logits_match_transformers(llm):
    from transformers import AutoModelForCausalLM

    from specwise.models.default import default_model_path

    path = default_model_path()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    for text in PROMPTS:
        ids = llm.tokenizer.encode(llm.tokenizer.apply_chat_template([{"role": "user", "content": text}]))
        ours = _forward_all(llm, ids)
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0]
        diff = (ours[-1] - ref[-1]).abs().max().item()
        assert diff < PARITY_ATOL, f"last-position logits differ by {diff}"
        assert (ours - ref).abs().max().item() < PARITY_ATOL
        assert int(ours[-1].argmax()) == int(ref[-1].argmax())


def test_row_logits_do_not_depend_on_batch_neighbours(llm):
    """A sequence's logits are bit-identical alone, as K+1 verify rows, and beside others."""
    a = llm.tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 3)
    b = llm.tokenizer.encode("Once upon a time, in a land far away,")
    cache = KVCache(llm.config, 4, 512)
    alone = _forward_all(llm, a, slot=0, cache=cache)
    # Same tokens in slot 1, with sequence b in slot 2 interleaved in the same call.
    rows_t = torch.tensor(b + a)
    rows_p = torch.cat([torch.arange(len(b)), torch.arange(len(a))])
    rows_s = torch.tensor([2] * len(b) + [1] * len(a))
    mixed = llm.model.forward(rows_t, rows_p, rows_s, cache)[len(b):]
    assert torch.equal(alone, mixed)
    # Token by token (M = 1 each) after a prefix: the decode path.
    cut = len(a) - 5
    _forward_all(llm, a[:cut], slot=3, cache=cache)
    for i in range(cut, len(a)):
        row = llm.model.forward(torch.tensor([a[i]]), torch.tensor([i]), torch.tensor([3]), cache)
        assert torch.equal(row[0], alone[i])


def test_rollback_leaves_cache_as_if_rejected_tokens_were_never_written(llm):
    ids = llm.tokenizer.encode("Rollback must be exact: the cache after a rejection equals a fresh run.")
    cache = KVCache(llm.config, 2, 256)
    n = len(ids)
    prefix = n - 6
    llm.model.forward(torch.tensor(ids[:prefix]), torch.arange(prefix), torch.zeros(prefix, dtype=torch.long), cache)
    cache.truncate(0, prefix)
    # A verify step with 5 rows of which only the first 2 are "accepted": rows 2..4 are junk tokens.
    junk = [ids[prefix], ids[prefix + 1], 17, 4242, 999]
    llm.model.forward(torch.tensor(junk), torch.arange(prefix, prefix + 5), torch.zeros(5, dtype=torch.long), cache)
    cache.truncate(0, prefix + 2)
    # Continue with the true tokens; logits and cache must equal a fresh run over the whole sequence.
    rest = ids[prefix + 2 :]
    cont = llm.model.forward(torch.tensor(rest), torch.arange(prefix + 2, n), torch.zeros(len(rest), dtype=torch.long), cache)
    fresh_cache = KVCache(llm.config, 2, 256)
    fresh = llm.model.forward(torch.tensor(ids), torch.arange(n), torch.zeros(n, dtype=torch.long), fresh_cache)
    assert torch.equal(cont, fresh[prefix + 2 :])
    for kept, ref in zip(cache.entries(0, n), fresh_cache.entries(0, n)):
        assert torch.equal(kept, ref)
