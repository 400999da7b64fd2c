"""A Llama-family decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU).

One forward handles prefill, plain decoding, verification of drafts and
ragged batches alike: it takes a flat list of rows, each a (token, position,
cache slot), writes each row's keys and values into its slot at its position,
and lets each row attend to its own slot's positions up to its own. The model
knows nothing of speculation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.models import native
from specwise.models.config import ModelConfig
from specwise.models.loader import Checkpoint


@dataclass(slots=True)
class _Layer:
    attn_norm: torch.Tensor
    qkv: torch.Tensor  # packed [q; k; v] projection
    o: torch.Tensor
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor  # packed [gate; up] projection
    down: torch.Tensor


class LlamaModel:
    """Inference-only decoder over the native kernels; weights are fp32, packed once."""

    def __init__(self, config: ModelConfig, weights: dict[str, torch.Tensor]) -> None:
        """Consumes ``weights``: each tensor leaves the dict as it is packed, so the
        unpacked and packed copies never coexist (peak memory stays near one copy)."""
        self.config = config
        c = config
        if c.head_dim % 8:
            raise SpecwiseError(f"head dimension {c.head_dim} is not a multiple of 8, which the CPU kernels need")

        def w(name: str) -> torch.Tensor:
            return weights.pop(name).float().contiguous()

        self.layers = []
        for i in range(c.num_layers):
            p = f"model.layers.{i}."
            self.layers.append(
                _Layer(
                    attn_norm=w(p + "input_layernorm.weight"),
                    qkv=native.pack_weight(
                        torch.cat([w(p + "self_attn.q_proj.weight"), w(p + "self_attn.k_proj.weight"), w(p + "self_attn.v_proj.weight")])
                    ),
                    o=native.pack_weight(w(p + "self_attn.o_proj.weight")),
                    mlp_norm=w(p + "post_attention_layernorm.weight"),
                    gate_up=native.pack_weight(torch.cat([w(p + "mlp.gate_proj.weight"), w(p + "mlp.up_proj.weight")])),
                    down=native.pack_weight(w(p + "mlp.down_proj.weight")),
                )
            )
        self.norm = w("model.norm.weight")
        embed = w("model.embed_tokens.weight")
        head = embed if c.tie_embeddings else w("lm_head.weight")
        self.lm_head = native.pack_weight(head)
        # A tied table is read back out of the packed head instead of kept twice.
        self._embed = None if c.tie_embeddings else embed
        inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float() / c.head_dim))
        angles = torch.arange(c.max_position, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self._cos = angles.cos().contiguous()
        self._sin = angles.sin().contiguous()
        self._qkv_width = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> LlamaModel:
        return cls(ckpt.config, ckpt.weights)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._embed is not None:
            return self._embed[tokens]
        return self.lm_head[tokens // native.NR, :, tokens % native.NR]

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
        c = self.config
        lib = native.lib()
        rows = tokens.shape[0]
        positions = positions.contiguous()
        slots = slots.contiguous()
        x = self.embed(tokens).contiguous()
        attn = torch.empty(rows, c.num_heads * c.head_dim, dtype=torch.float32)
        scale = 1.0 / math.sqrt(c.head_dim)
        for i, layer in enumerate(self.layers):
            h = native.rmsnorm(x, layer.attn_norm, c.rms_norm_eps)
            qkv = native.linear(h, layer.qkv, self._qkv_width)
            k_cache, v_cache = cache.k[i], cache.v[i]
            lib.sw_rope_store(
                qkv.data_ptr(), rows, c.num_heads, c.num_kv_heads, c.head_dim,
                self._cos.data_ptr(), self._sin.data_ptr(), positions.data_ptr(), slots.data_ptr(),
                k_cache.data_ptr(), v_cache.data_ptr(), cache.max_len,
            )  # fmt: skip
            lib.sw_attention(
                qkv.data_ptr(), qkv.stride(0), rows, c.num_heads, c.num_kv_heads, c.head_dim,
                k_cache.data_ptr(), v_cache.data_ptr(), cache.max_len, positions.data_ptr(), slots.data_ptr(),
                scale, attn.data_ptr(),
            )  # fmt: skip
            x += native.linear(attn, layer.o, c.hidden_size)
            h = native.rmsnorm(x, layer.mlp_norm, c.rms_norm_eps)
            x += native.linear(native.silu_mul(native.linear(h, layer.gate_up, 2 * c.intermediate_size)), layer.down, c.hidden_size)
        if logit_rows is not None:
            x = x[logit_rows].contiguous()
        return native.linear(native.rmsnorm(x, self.norm, c.rms_norm_eps), self.lm_head, c.vocab_size)
