"""Loading a Hugging Face directory gives the same model as the GGUF it was written from."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

pytestmark = pytest.mark.slow


def test_hf_directory_matches_gguf(llm, tmp_path):
    """Written from the GGUF's fp32 dequantization, it runs bit-identical to that; with
    --quantize q8_0 it runs quantized and gives the quantized GGUF's greedy tokens."""
    from safetensors.torch import save_file

    from specwise import LLM
    from specwise.kv_cache import KVCache
    from specwise.models.default import default_model_path
    from specwise import Request, SamplingParams, SpeculativeConfig
    from specwise.models.llama import LlamaModel
    from specwise.models.loader import _gguf_tokenizer_file, load_checkpoint

    gguf = default_model_path()
    ckpt = load_checkpoint(gguf, weights="fp32")
    c = ckpt.config
    save_file({k: v.contiguous() for k, v in ckpt.weights.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
        "intermediate_size": c.intermediate_size, "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": c.max_position, "tie_word_embeddings": c.tie_embeddings, "eos_token_id": 2,
    }))  # fmt: skip
    shutil.copy(_gguf_tokenizer_file(gguf), tmp_path / "tokenizer.json")
    from gguf import GGUFReader

    template = GGUFReader(str(gguf)).fields["tokenizer.chat_template"].contents()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, "eos_token": "<|im_end|>"}))

    hf = LLM(tmp_path, max_model_len=512)
    assert hf.config == llm.config
    assert hf.tokenizer.eos_token_ids >= {2}
    messages = [{"role": "user", "content": "Name three primary colours."}]
    ids = hf.encode_messages(messages, chat=True)
    assert ids == llm.encode_messages(messages, chat=True)
    n = len(ids)
    rows = (torch.tensor(ids), torch.arange(n), torch.zeros(n, dtype=torch.long))
    fp32 = LlamaModel(c, ckpt.weights)
    assert torch.equal(hf.model.forward(*rows, KVCache(c, 1, 512)), fp32.forward(*rows, KVCache(c, 1, 512)))

    q8 = LLM(tmp_path, max_model_len=512, quantize="q8_0")
    assert q8.weight_format == "q8_0" and q8.model.layers[0].qkv.kind == "q8_0"
    request, params, plain = [Request(id="a", messages=messages)], SamplingParams(max_tokens=32, ignore_eos=True), SpeculativeConfig("none")
    assert q8.generate(request, params, plain)[0].token_ids == llm.generate(request, params, plain)[0].token_ids
