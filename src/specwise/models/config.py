"""Shape and hyper-parameters of a Llama-family decoder."""

from __future__ import annotations

from dataclasses import dataclass

from specwise.errors import SpecwiseError


@dataclass(slots=True, frozen=True)
class ModelConfig:
    vocab_size: int
    """Rows of the embedding table and of the LM head."""
    hidden_size: int
    """Width of the residual stream."""
    num_layers: int
    num_heads: int
    """Query heads."""
    num_kv_heads: int
    """Key/value heads (grouped-query attention when fewer than ``num_heads``)."""
    intermediate_size: int
    """Width of the SwiGLU MLP."""
    rope_theta: float
    rms_norm_eps: float
    max_position: int
    """Longest context the model was trained for."""
    tie_embeddings: bool
    """The LM head reuses the embedding table."""

    def __post_init__(self) -> None:
        if min(self.vocab_size, self.hidden_size, self.num_layers, self.num_heads, self.num_kv_heads, self.intermediate_size, self.max_position) <= 0:
            raise SpecwiseError("model config has a non-positive size")
        if self.hidden_size % self.num_heads:
            raise SpecwiseError(f"hidden size {self.hidden_size} is not a multiple of {self.num_heads} heads")
        if self.num_heads % self.num_kv_heads:
            raise SpecwiseError(f"{self.num_heads} query heads do not divide into {self.num_kv_heads} KV heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads
