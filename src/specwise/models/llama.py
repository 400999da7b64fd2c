"""A Llama-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU).

One forward handles prefill, plain decoding, verification of drafts and
ragged batches alike: it takes a flat list of rows, each a (token, position,
cache slot), writes each row's keys and values into its slot at its position,
and lets each row attend to its own slot's positions up to its own. The model
knows nothing of speculation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.models import native
from specwise.models.config import ModelConfig
from specwise.models.loader import Checkpoint


@dataclass(slots=True)
class Layer:
    attn_norm: torch.Tensor
    qkv: torch.Tensor  # packed [q; k; v] projection
    o: torch.Tensor
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor  # packed [gate; up] projection
    down: torch.Tensor

    @classmethod
    def from_weights(cls, weights: dict[str, torch.Tensor], prefix: str) -> Layer:
        """Packs (and pops) one layer's HF-named tensors under ``prefix``."""

        def w(name: str) -> torch.Tensor:
            return _take(weights, prefix + name)

        return cls(
            attn_norm=w("input_layernorm.weight"),
            qkv=native.pack_weight(torch.cat([w("self_attn.q_proj.weight"), w("self_attn.k_proj.weight"), w("self_attn.v_proj.weight")])),
            o=native.pack_weight(w("self_attn.o_proj.weight")),
            mlp_norm=w("post_attention_layernorm.weight"),
            gate_up=native.pack_weight(torch.cat([w("mlp.gate_proj.weight"), w("mlp.up_proj.weight")])),
            down=native.pack_weight(w("mlp.down_proj.weight")),
        )


def _take(weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return weights.pop(name).float().contiguous()


class LlamaModel:
    """Inference-only decoder over the native kernels; weights are fp32, packed once."""

    def __init__(self, config: ModelConfig, weights: dict[str, torch.Tensor]) -> None:
        """Consumes ``weights``: each tensor leaves the dict as it is packed, so the
        unpacked and packed copies never coexist (peak memory stays near one copy)."""
        self.config = config
        c = config
        if c.head_dim % 8:
            raise SpecwiseError(f"head dimension {c.head_dim} is not a multiple of 8, which the CPU kernels need")
        if c.num_heads % c.num_kv_heads or c.num_heads // c.num_kv_heads > native.MAX_GROUP:
            raise SpecwiseError(
                f"{c.num_heads} query heads over {c.num_kv_heads} KV heads: the CPU kernels need whole groups of at most {native.MAX_GROUP}"
            )

        self.layers = [Layer.from_weights(weights, f"model.layers.{i}.") for i in range(c.num_layers)]
        self.norm = _take(weights, "model.norm.weight")
        embed = _take(weights, "model.embed_tokens.weight")
        head = embed if c.tie_embeddings else _take(weights, "lm_head.weight")
        self.lm_head = native.pack_weight(head)
        # A tied table is read back out of the packed head instead of kept twice.
        self._embed = None if c.tie_embeddings else embed
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float() / c.head_dim))
        angles = torch.arange(c.max_position, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self.rope = (angles.cos().contiguous(), angles.sin().contiguous())

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> LlamaModel:
        return cls(ckpt.config, ckpt.weights)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._embed is not None:
            return self._embed[tokens]
        return self.head_rows(tokens)

    def head_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of the LM head, read back out of its packed form (for trimmed draft heads)."""
        return self.lm_head[ids // native.NR, :, ids % native.NR]

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor,
        cache: KVCache,
        logit_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rows (token, position, slot) -> logits [len(logit_rows) or rows, vocab].

        tokens, positions, slots: int64 [R]. Each row's logits are bit-identical
        whatever other rows share the call.
        """
        return self.logits(self.hidden(self.embed(tokens).contiguous(), positions, slots, cache), logit_rows)

    def hidden(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        slots: torch.Tensor,
        cache: KVCache,
        layers: Seq[int] | None = None,
        cache_layers: Seq[int] | None = None,
    ) -> torch.Tensor:
        """Run ``layers`` (default: all) over x [R, hidden] in place; returns the
        pre-norm hidden state (the feature EAGLE-style drafters learn from).

        Layer ``layers[j]`` keeps its keys and values in ``cache`` layer
        ``cache_layers[j]`` (default: the same index), so a drafter built from a
        subset of the layers can own a smaller cache.
        """
        layers = range(len(self.layers)) if layers is None else layers
        cache_layers = layers if cache_layers is None else cache_layers
        positions = positions.contiguous()
        slots = slots.contiguous()
        for i, j in zip(layers, cache_layers):
            run_layer(self.config, self.layers[i], x, positions, slots, cache, j, self.rope)
        return x

    def logits(self, x: torch.Tensor, rows: torch.Tensor | None = None, head: TrimmedHead | None = None) -> torch.Tensor:
        """Final norm and LM head, or a trimmed ``head`` (logits over its ids only)."""
        if rows is not None:
            x = x[rows].contiguous()
        return self.project(self.final_norm(x), head)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return native.rmsnorm(x, self.norm, self.config.rms_norm_eps)

    def project(self, y: torch.Tensor, head: TrimmedHead | None = None) -> torch.Tensor:
        """Normed hidden states -> logits over the vocabulary (or ``head``'s ids)."""
        if head is None:
            return native.linear(y, self.lm_head, self.config.vocab_size)
        return native.linear(y, head.packed, head.ids.shape[0])

    def trimmed_head(self, ids: torch.Tensor) -> TrimmedHead:
        """An LM head over a subset of the vocabulary, for drafting: its cost falls
        with the subset, and verification still runs over the full vocabulary."""
        return TrimmedHead(ids, native.pack_weight(self.head_rows(ids)))


@dataclass(slots=True, frozen=True)
class TrimmedHead:
    ids: torch.Tensor
    """int64 [N]: the vocabulary ids that row i of the logits stands for."""
    packed: torch.Tensor


def run_layer(
    c: ModelConfig,
    layer: Layer,
    x: torch.Tensor,
    positions: torch.Tensor,
    slots: torch.Tensor,
    cache: KVCache,
    cache_layer: int,
    rope: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """One decoder layer over rows x [R, hidden], in place; writes the rows' K/V to
    layer ``cache_layer`` of the cache."""
    lib = native.lib()
    rows = x.shape[0]
    k_cache, v_cache = cache.k[cache_layer], cache.v[cache_layer]
    h = native.rmsnorm(x, layer.attn_norm, c.rms_norm_eps)
    qkv = native.linear(h, layer.qkv, (c.num_heads + 2 * c.num_kv_heads) * c.head_dim)
    lib.sw_rope_store(
        qkv.data_ptr(), rows, c.num_heads, c.num_kv_heads, c.head_dim,
        rope[0].data_ptr(), rope[1].data_ptr(), positions.data_ptr(), slots.data_ptr(),
        k_cache.data_ptr(), v_cache.data_ptr(), cache.stride,
    )  # fmt: skip
    attn = torch.empty(rows, c.num_heads * c.head_dim, dtype=torch.float32)
    lib.sw_attention(
        qkv.data_ptr(), qkv.stride(0), rows, c.num_heads, c.num_kv_heads, c.head_dim,
        k_cache.data_ptr(), v_cache.data_ptr(), cache.stride, positions.data_ptr(), slots.data_ptr(),
        1.0 / math.sqrt(c.head_dim), attn.data_ptr(),
    )  # fmt: skip
    x += native.linear(attn, layer.o, c.hidden_size)
    h = native.rmsnorm(x, layer.mlp_norm, c.rms_norm_eps)
    x += native.linear(native.silu_mul(native.linear(h, layer.gate_up, 2 * c.intermediate_size)), layer.down, c.hidden_size)
