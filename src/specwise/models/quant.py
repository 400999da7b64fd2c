"""Weights kept in a GGUF block format until the kernels repack them.

A quantized matrix moves through loading (row permutations, concatenation of
q/k/v and gate/up) as rows of blocks, so no fp32 copy of it ever exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from specwise.errors import SpecwiseError
from specwise.models import native
from specwise.models.formats import QK


@dataclass(slots=True, frozen=True)
class QuantTensor:
    kind: str
    """One of ``native.QUANT_TYPES``."""
    blocks: np.ndarray
    """uint8 [rows, in_features / QK * block bytes]: each row's blocks as GGUF stores
    them (a view of the memory-mapped file until packed)."""
    in_features: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.blocks.shape[0], self.in_features)

    @classmethod
    def quantize(cls, weight: torch.Tensor, kind: str) -> QuantTensor:
        """gguf's reference quantizer (the one llama.cpp's converter matches)."""
        if weight.shape[1] % QK:
            raise SpecwiseError(f"cannot quantize a matrix of {weight.shape[1]} inputs to {kind}: blocks need a multiple of {QK}")
        from gguf import GGMLQuantizationType
        from gguf.quants import quantize

        blocks = quantize(weight.float().numpy(), GGMLQuantizationType[kind.upper()])
        return cls(kind, blocks.reshape(weight.shape[0], -1), weight.shape[1])

    def dequantize(self) -> torch.Tensor:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        data = dequantize(self.blocks, GGMLQuantizationType[self.kind.upper()])
        return torch.from_numpy(np.array(data, dtype=np.float32).reshape(self.shape))


Weight = torch.Tensor | QuantTensor


def cat_rows(parts: Sequence[Weight]) -> Weight:
    """Stack matrices by rows; mixed formats meet in fp32."""
    if all(isinstance(p, QuantTensor) for p in parts) and len({p.kind for p in parts}) == 1:
        return QuantTensor(parts[0].kind, np.concatenate([p.blocks for p in parts]), parts[0].in_features)
    return torch.cat([fp32(p) for p in parts])


def fp32(w: Weight) -> torch.Tensor:
    return w.dequantize() if isinstance(w, QuantTensor) else w.float().contiguous()


def pack(w: Weight) -> native.Packed:
    """The kernels' layout of a matrix, in the format it arrives in."""
    if isinstance(w, QuantTensor):
        return native.pack_quantized(w.kind, w.blocks, w.in_features)
    return native.pack_weight(w.float())
