"""Preallocated KV cache: one slot per running sequence, rollback by length."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from specwise.errors import SpecwiseError
from specwise.models.config import ModelConfig
from specwise.models.native import KB


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
        # Positions per slot, rounded up to whole key blocks. Keys are stored in
        # blocks of KB positions, transposed ([D][KB]), so that the attention
        # kernel scores KB keys with vertical FMAs; values stay row-major.
        self.stride = -(-max_len // KB) * KB
        c = config
        self.k = torch.zeros(c.num_layers, num_slots, c.num_kv_heads, self.stride // KB, c.head_dim, KB, dtype=torch.float32)
        self.v = torch.zeros(c.num_layers, num_slots, c.num_kv_heads, self.stride, c.head_dim, dtype=torch.float32)
        self.max_len = max_len
        self.lengths = [0] * num_slots
        self._free = list(range(num_slots - 1, -1, -1))
        self._kept: list[list[int]] = [[] for _ in range(num_slots)]
        """Per free slot, the tokens its valid positions held when it was released."""

    def entries(self, slot: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of a slot's first n positions, [layers, n, kv_heads, head_dim] each
        (a copy, for inspection)."""
        k = self.k[:, slot].permute(0, 2, 4, 1, 3).flatten(1, 2)[:, :n]
        return k.contiguous(), self.v[:, slot].transpose(1, 2)[:, :n].contiguous()

    @property
    def num_slots(self) -> int:
        return len(self.lengths)

    def allocate(self, tokens: Seq[int] = ()) -> int:
        """A free slot; the one whose kept tokens share the longest prefix with
        ``tokens`` (the most recently freed among equals), with that prefix left
        valid (its length), short of the last token, which must be fed to give logits.

        Reuse is exact: a position's keys and values depend only on the tokens up
        to it, and the kernels compute them bit-identically in any batch."""
        if not self._free:
            raise SpecwiseError("no free KV cache slot")
        best, best_len = len(self._free) - 1, 0
        for i in range(len(self._free) - 1, -1, -1):
            n = _common_prefix(self._kept[self._free[i]], tokens)
            if n > best_len:
                best, best_len = i, n
        slot = self._free.pop(best)
        self.lengths[slot] = min(best_len, max(len(tokens) - 1, 0))
        self._kept[slot] = []
        return slot

    def release(self, slot: int, tokens: Seq[int] = ()) -> None:
        """Free a slot; ``tokens`` are what its first positions hold (at most its
        length), kept for a later request that starts the same way."""
        self._kept[slot] = list(tokens[: self.lengths[slot]])
        self.lengths[slot] = 0
        self._free.append(slot)

    def forget(self) -> None:
        """Drop what the free slots kept: the next requests start from an empty cache."""
        for slot in self._free:
            self._kept[slot] = []

    def truncate(self, slot: int, length: int) -> None:
        """Roll a slot back (or forward, after a write) to ``length`` valid positions. O(1)."""
        if not 0 <= length <= self.max_len:
            raise ValueError(f"length {length} outside [0, {self.max_len}]")
        self.lengths[slot] = length


def _common_prefix(a: Seq[int], b: Seq[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
