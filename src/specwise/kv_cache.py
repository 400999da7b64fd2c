"""Preallocated KV cache: one slot per running sequence, rollback by length."""

from __future__ import annotations

import torch

from specwise.errors import SpecwiseError
from specwise.models.config import ModelConfig


class KVCache:
    """Keys and values for ``num_slots`` sequences of up to ``max_len`` tokens.

    The cache never moves data on rollback: a slot's ``length`` says how many
    positions are valid, and a forward pass only reads positions at or below
    its own rows' positions, which it has just written. Rejected draft
    positions are therefore dead the moment the length is set back, and are
    overwritten by the next step.
    """

    def __init__(self, config: ModelConfig, num_slots: int, max_len: int) -> None:
        if max_len > config.max_position:
            raise SpecwiseError(f"max context {max_len} exceeds the model's {config.max_position}")
        shape = (config.num_layers, num_slots, max_len, config.num_kv_heads, config.head_dim)
        self.k = torch.zeros(shape, dtype=torch.float32)
        self.v = torch.zeros(shape, dtype=torch.float32)
        self.max_len = max_len
        self.lengths = [0] * num_slots
        self._free = list(range(num_slots - 1, -1, -1))

    @property
    def num_slots(self) -> int:
        return len(self.lengths)

    def allocate(self) -> int:
        if not self._free:
            raise SpecwiseError("no free KV cache slot")
        slot = self._free.pop()
        self.lengths[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        self.lengths[slot] = 0
        self._free.append(slot)

    def truncate(self, slot: int, length: int) -> None:
        """Roll a slot back (or forward, after a write) to ``length`` valid positions. O(1)."""
        if not 0 <= length <= self.max_len:
            raise ValueError(f"length {length} outside [0, {self.max_len}]")
        self.lengths[slot] = length
