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
from specwise.models.quant import Weight, cat_rows, fp32, pack


@dataclass(slots=True)
class Layer:
    attn_norm: torch.Tensor
    qkv: native.Packed  # [q; k; v] projection
    o: native.Packed
    mlp_norm: torch.Tensor
    gate_up: native.Packed  # [gate; up] projection
    down: native.Packed

    @classmethod
    def from_weights(cls, weights: dict[str, Weight], prefix: str) -> Layer:
        """Packs (and pops) one layer's HF-named tensors under ``prefix``."""

        def w(name: str) -> Weight:
            return weights.pop(prefix + name)

        return cls(
            attn_norm=fp32(w("input_layernorm.weight")),
            qkv=pack(cat_rows([w("self_attn.q_proj.weight"), w("self_attn.k_proj.weight"), w("self_attn.v_proj.weight")])),
            o=pack(w("self_attn.o_proj.weight")),
            mlp_norm=fp32(w("post_attention_layernorm.weight")),
            gate_up=pack(cat_rows([w("mlp.gate_proj.weight"), w("mlp.up_proj.weight")])),
            down=pack(w("mlp.down_proj.weight")),
        )


class LlamaModel:
    """Inference-only decoder over the native kernels; matrices packed once, fp32 or
    in their block format."""

    def __init__(self, config: ModelConfig, weights: dict[str, Weight]) -> None:
        """Consumes ``weights``: each tensor leaves the dict as it is packed, so the
        unpacked and packed copies never coexist (peak memory stays near one copy)."""
        self.config = config
        c = config
        if c.head_dim % 8:
            raise SpecwiseError(f"head dimension {c.head_dim} is not a multiple of 8, which the CPU kernels need")
        if ((c.num_heads + 2 * c.num_kv_heads) * c.head_dim) % native.NR or (2 * c.intermediate_size) % native.NR or c.hidden_size % native.NR:
            raise SpecwiseError(f"the CPU kernels need the hidden, qkv and gate/up widths in multiples of {native.NR}")
        if c.num_heads % c.num_kv_heads or c.num_heads // c.num_kv_heads > native.MAX_GROUP:
            raise SpecwiseError(
                f"{c.num_heads} query heads over {c.num_kv_heads} KV heads: the CPU kernels need whole groups of at most {native.MAX_GROUP}"
            )

        self.layers = [Layer.from_weights(weights, f"model.layers.{i}.") for i in range(c.num_layers)]
        self.norm = fp32(weights.pop("model.norm.weight"))
        embed = pack(weights.pop("model.embed_tokens.weight"))
        self.lm_head = embed if c.tie_embeddings else pack(weights.pop("lm_head.weight"))
        # Embedding rows are read back out of the packed table (the head's, if tied),
        # so no second fp32 copy exists.
        self._embed = embed
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float() / c.head_dim))
        angles = torch.arange(c.max_position, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self.rope = (angles.cos().contiguous(), angles.sin().contiguous())

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> LlamaModel:
        return cls(ckpt.config, ckpt.weights)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._embed.rows(tokens)

    def head_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """fp32 rows of the LM head, read back out of its packed form (for trimmed draft heads)."""
        return self.lm_head.rows(ids)

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
        run_layers(self.config, [self.layers[i] for i in layers], x, positions, slots, cache, cache_layers, self.rope)
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
            return native.linear(y, self.lm_head)
        return native.linear(y, head.packed)

    def trimmed_head(self, ids: torch.Tensor) -> TrimmedHead:
        """An LM head over a subset of the vocabulary, for drafting: its cost falls
        with the subset, and verification still runs over the full vocabulary."""
        return TrimmedHead(ids, native.pack_weight(self.head_rows(ids)))


@dataclass(slots=True, frozen=True)
class TrimmedHead:
    ids: torch.Tensor
    """int64 [N]: the vocabulary ids that row i of the logits stands for."""
    packed: native.Packed


def run_layers(
    c: ModelConfig,
    layers: Seq[Layer],
    x: torch.Tensor,
    positions: torch.Tensor,
    slots: torch.Tensor,
    cache: KVCache,
    cache_layers: Seq[int],
    rope: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Decoder layers over rows x [R, hidden], in place, in one kernel call; layer i
    writes the rows' K/V to layer ``cache_layers[i]`` of the cache."""
    specs = (native.LayerSpec * len(layers))(
        *[native.layer_spec(ly.attn_norm, ly.mlp_norm, (ly.qkv, ly.o, ly.gate_up, ly.down), cache.k[j], cache.v[j]) for ly, j in zip(layers, cache_layers)]
    )
    native.lib().sw_layers(
        x.data_ptr(), x.shape[0], specs, len(layers), c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
        c.intermediate_size, c.rms_norm_eps, rope[0].data_ptr(), rope[1].data_ptr(), positions.data_ptr(), slots.data_ptr(),
        cache.stride, 1.0 / math.sqrt(c.head_dim),
    )  # fmt: skip
