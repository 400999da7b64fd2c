"""Distilling a small draft model from the target: a few of the target's layers
(as the starting point), its frozen embedding and LM head, trained to predict
the target's own next token on text the target wrote."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence as Seq
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from specwise.models.config import ModelConfig
from specwise.models.tokenizer import Tokenizer
from specwise.train.collect import Sample
from specwise.train.loop import answer_labels, fit
from specwise.train.torch_llama import TorchLayer, rms_norm, rope_tables


class DraftModel(nn.Module):
    def __init__(self, c: ModelConfig, num_layers: int) -> None:
        super().__init__()
        self.c = c
        self.layers = nn.ModuleList(TorchLayer(c) for _ in range(num_layers))
        self.norm = nn.Parameter(torch.ones(c.hidden_size))

    def forward(self, embeds: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = embeds
        for layer in self.layers:
            x = layer(x, cos, sin)
        return rms_norm(x, self.norm, self.c.rms_norm_eps)


def train_draft_model(
    config: ModelConfig,
    head: torch.Tensor,
    target_weights: dict[str, torch.Tensor],
    init_layers: Seq[int],
    samples: Seq[Sample],
    *,
    epochs: int = 2,
    lr: float = 5e-4,
    ce_vocab: int = 16384,
    tokens_per_batch: int = 4096,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, torch.Tensor]:
    """Returns HF-named weights of a ``len(init_layers)``-layer model whose layers
    start as the target's ``init_layers``."""
    torch.manual_seed(seed)
    labels = answer_labels(samples, head, ce_vocab)
    model = DraftModel(config, len(init_layers))
    for layer, src in zip(model.layers, init_layers):
        layer.load_hf_state(target_weights, f"model.layers.{src}.")
    with torch.no_grad():
        model.norm.copy_(target_weights["model.norm.weight"])
    lengths = [s.features.shape[0] for s in samples]
    cos, sin = rope_tables(config, max(lengths))

    def loss_fn(batch: list[int]) -> tuple[torch.Tensor, str]:
        t = max(lengths[i] for i in batch)
        toks = torch.zeros(len(batch), t, dtype=torch.int64)
        tgt = torch.full((len(batch), t), -100, dtype=torch.int64)
        for row, i in enumerate(batch):
            n = lengths[i]
            toks[row, :n] = samples[i].tokens[:n]
            tgt[row, :n] = labels.per_sample[i][:n]
        out = model(head[toks], cos[:t], sin[:t])
        scored = tgt >= 0
        loss = F.cross_entropy(out[scored] @ labels.head.T, tgt[scored])
        return loss, f"ce {loss.item():.3f}"

    fit(model, lengths, loss_fn, epochs=epochs, lr=lr, tokens_per_batch=tokens_per_batch, seed=seed, log=log)
    weights = {"model.norm.weight": model.norm.detach().float(), "model.embed_tokens.weight": head, "token_counts": labels.counts}
    for i, layer in enumerate(model.layers):
        weights.update(layer.hf_state(f"model.layers.{i}."))
    return weights


def save_hf_dir(path: Path, config: ModelConfig, weights: dict[str, torch.Tensor], tokenizer: Tokenizer) -> None:
    """A Hugging Face Llama directory (fp16 safetensors, tied embeddings) that
    specwise, and transformers, can load."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}, str(path / "model.safetensors"))
    c = config
    (path / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads, "intermediate_size": c.intermediate_size, "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_norm_eps, "max_position_embeddings": c.max_position, "tie_word_embeddings": True,
        "hidden_act": "silu", "torch_dtype": "float16", "eos_token_id": sorted(tokenizer.eos_token_ids),
    }, indent=1))  # fmt: skip
    shutil.copy(tokenizer.file, path / "tokenizer.json")
    tok_cfg = {"chat_template": tokenizer.chat_template, "bos_token": tokenizer.bos_token}
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))
