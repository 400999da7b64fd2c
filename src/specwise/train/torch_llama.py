"""A trainable torch twin of one decoder layer, with the same weights and names
as the native inference path (the tests check the two agree)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from specwise.models.config import ModelConfig


def rope_tables(c: ModelConfig, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64).float() / c.head_dim))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class TorchLayer(nn.Module):
    """Pre-norm attention (RoPE, grouped-query, causal) and SwiGLU MLP."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.c = c
        h, d = c.hidden_size, c.head_dim
        self.input_layernorm = nn.Parameter(torch.ones(h))
        self.post_attention_layernorm = nn.Parameter(torch.ones(h))
        self.q_proj = nn.Linear(h, c.num_heads * d, bias=False)
        self.k_proj = nn.Linear(h, c.num_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, c.num_kv_heads * d, bias=False)
        self.o_proj = nn.Linear(c.num_heads * d, h, bias=False)
        self.gate_proj = nn.Linear(h, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(h, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, h, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, T, H] at positions 0..T-1 (cos/sin [T, D/2])."""
        c = self.c
        b, t, _ = x.shape
        h = rms_norm(x, self.input_layernorm, c.rms_norm_eps)
        q = self.q_proj(h).view(b, t, c.num_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, t, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, t, c.num_kv_heads, c.head_dim).transpose(1, 2)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, t, -1))
        h = rms_norm(x, self.post_attention_layernorm, c.rms_norm_eps)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))

    def hf_state(self, prefix: str) -> dict[str, torch.Tensor]:
        """Weights under Hugging Face Llama names, as the native loader reads them."""
        out = {f"{prefix}input_layernorm.weight": self.input_layernorm, f"{prefix}post_attention_layernorm.weight": self.post_attention_layernorm}
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[f"{prefix}self_attn.{name}.weight"] = getattr(self, name).weight
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[f"{prefix}mlp.{name}.weight"] = getattr(self, name).weight
        return {k: v.detach().float().contiguous() for k, v in out.items()}

    def load_hf_state(self, weights: dict[str, torch.Tensor], prefix: str) -> None:
        with torch.no_grad():
            for k, v in self.hf_state(prefix).items():
                target = self._param(k[len(prefix) :])
                target.copy_(weights[k])

    def _param(self, name: str) -> torch.Tensor:
        if name.endswith("layernorm.weight"):
            return getattr(self, name.removesuffix(".weight"))
        return getattr(self, name.split(".")[1]).weight
