"""Builds and calls the C kernels in ``kernels.c`` (the decoder's hot path).

The library is compiled once per machine with the system C compiler into the
user cache (``-march=native``), so the package itself stays pure Python and
installs without a build step.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from specwise.errors import SpecwiseError
from specwise.models.formats import QK, QUANT_TYPES
from specwise.paths import cache_dir

NR = 16  # columns per packed weight panel; must match kernels.c
KB = 16  # positions per key block of the KV cache; must match kernels.c
MAX_GROUP = 16  # query heads per KV head the attention kernel handles; must match kernels.c
_SOURCE = Path(__file__).with_name("kernels.c")
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.uname().machine
    flags = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return os.uname().machine + flags


def build_id() -> str:
    """Names the kernels' source, flags and CPU: measurements keyed by it (step-cost
    profiles, drafter calibrations) are retaken when any of them changes."""
    return hashlib.sha256(_SOURCE.read_bytes() + " ".join(_FLAGS).encode() + _cpu_signature().encode()).hexdigest()[:16]


def _build() -> Path:
    target = cache_dir() / "kernels" / f"libspecwise-{build_id()}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise SpecwiseError("no C compiler found (install gcc, or set CC): specwise builds its CPU kernels once")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        proc = subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", str(out), "-lm"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SpecwiseError(f"building the CPU kernels failed:\n{proc.stderr.strip()}")
        out.replace(target)  # atomic: concurrent builders never see a partial file
    return target


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(_build()))
    i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
    signatures = {
        "sw_linear": [ptr, i64, i64, ptr, i64, i64, ptr, i64],
        "sw_qlinear": [ptr, i64, i64, ptr, ctypes.c_int, i64, i64, ptr, i64],
        "sw_qrows": [ptr, ctypes.c_int, i64, ptr, i64, ptr],
        "sw_rmsnorm": [ptr, i64, i64, ptr, f32, ptr],
        "sw_silu_mul": [ptr, i64, i64, ptr],
        "sw_rope_store": [ptr, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, i64],
        "sw_attention": [ptr, i64, i64, i64, i64, i64, ptr, ptr, i64, ptr, ptr, f32, ptr],
        "sw_layers": [ptr, i64, ptr, i64, i64, i64, i64, i64, i64, f32, ptr, ptr, ptr, ptr, i64, f32],
    }
    for name, args in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = None
    return lib


_LIB: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    """The loaded kernel library (built on first use)."""
    global _LIB
    if _LIB is None:
        _LIB = _load()
    return _LIB


_SCALES = {"q8_0": 1, "q4_0": 1, "q4_1": 2}  # fp16 fields at the head of a GGUF block
_BLOCK_BYTES = {"q8_0": 2 + QK, "q4_0": 2 + QK // 2, "q4_1": 4 + QK // 2}


class _Mat(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("qtype", ctypes.c_int64)]


class LayerSpec(ctypes.Structure):
    """One decoder layer for ``sw_layers``: its weights and its cache layer."""

    _fields_ = [
        ("attn_norm", ctypes.c_void_p), ("mlp_norm", ctypes.c_void_p),
        ("qkv", _Mat), ("o", _Mat), ("gate_up", _Mat), ("down", _Mat),
        ("kc", ctypes.c_void_p), ("vc", ctypes.c_void_p),
    ]  # fmt: skip


def layer_spec(attn_norm: torch.Tensor, mlp_norm: torch.Tensor, mats: tuple[Packed, Packed, Packed, Packed], k: torch.Tensor, v: torch.Tensor) -> LayerSpec:
    """``mats``: qkv, o, gate_up, down. The spec holds raw pointers: keep the tensors alive."""
    m = [_Mat(p.data.data_ptr(), QUANT_TYPES.get(p.kind, -1)) for p in mats]
    return LayerSpec(attn_norm.data_ptr(), mlp_norm.data_ptr(), *m, k.data_ptr(), v.data_ptr())


@dataclass(slots=True, frozen=True)
class Packed:
    """A weight [N, K] (out, in) laid out for the kernels: fp32 panels
    [ceil(N/NR), K, NR], or a quantized format's blocks repacked by panel."""

    kind: str
    """"f32" or one of ``QUANT_TYPES``."""
    data: torch.Tensor
    out_features: int
    in_features: int

    @property
    def padded_out(self) -> int:
        return -(-self.out_features // NR) * NR

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """fp32 rows ``ids`` of W [len(ids), K]: the embedding lookup of a tied head,
        and the rows of trimmed draft heads, without an fp32 copy of the whole table."""
        if self.kind == "f32":
            return self.data[ids // NR, :, ids % NR]
        ids = ids.to(torch.int64).contiguous()
        out = torch.empty(ids.shape[0], self.in_features, dtype=torch.float32)
        if ids.shape[0]:
            lib().sw_qrows(self.data.data_ptr(), QUANT_TYPES[self.kind], self.in_features, ids.data_ptr(), ids.shape[0], out.data_ptr())
        return out


def pack_weight(weight: torch.Tensor) -> Packed:
    """[N, K] (out, in) fp32 -> panels [ceil(N/NR), K, NR], zero-padded, for ``linear``."""
    n, k = weight.shape
    panels = -(-n // NR)
    padded = torch.zeros(panels * NR, k, dtype=torch.float32)
    padded[:n] = weight
    return Packed("f32", padded.view(panels, NR, k).transpose(1, 2).contiguous(), n, k)


def pack_quantized(kind: str, blocks: np.ndarray, in_features: int) -> Packed:
    """GGUF blocks of a weight, uint8 [N, K/QK * block bytes] -> the kernels' layout:
    per panel and block, 16 fp32 scales (and minimums), then the quants by k-row."""
    if in_features % QK:
        raise SpecwiseError(f"a {kind} weight needs a multiple of {QK} inputs, got {in_features}")
    n, nb = blocks.shape[0], in_features // QK
    panels = -(-n // NR)
    raw = np.zeros((panels * NR, nb, _BLOCK_BYTES[kind]), dtype=np.uint8)
    raw[:n] = blocks.reshape(n, nb, -1)
    raw = raw.reshape(panels, NR, nb, -1).transpose(0, 2, 1, 3)  # [P, nb, NR, bytes]
    head = 2 * _SCALES[kind]
    scales = [np.ascontiguousarray(raw[..., 2 * i : 2 * i + 2]).view(np.float16)[..., 0].astype(np.float32) for i in range(_SCALES[kind])]
    qs = raw[..., head:]
    if kind == "q8_0":
        quants = qs.transpose(0, 1, 3, 2)  # [P, nb, k, NR] int8 bytes
    else:
        nib = np.concatenate([qs & 15, qs >> 4], axis=-1)  # [P, nb, NR, k]: element i < 16 low, i + 16 high
        nib = nib.transpose(0, 1, 3, 2)  # [P, nb, k, NR]
        quants = nib[..., : NR // 2] | (nib[..., NR // 2 :] << 4)
    parts = [s.view(np.uint8).reshape(panels, nb, -1) for s in scales] + [np.ascontiguousarray(quants).reshape(panels, nb, -1)]
    packed = np.concatenate(parts, axis=-1).reshape(-1)
    return Packed(kind, torch.from_numpy(np.ascontiguousarray(packed)), n, in_features)


def linear(x: torch.Tensor, packed: Packed) -> torch.Tensor:
    """x [M, K] -> [M, out_features]; batch-invariant per row."""
    m, k = x.shape
    n_padded = packed.padded_out
    y = torch.empty(m, n_padded, dtype=torch.float32)
    if m:
        if packed.kind == "f32":
            lib().sw_linear(x.data_ptr(), m, x.stride(0), packed.data.data_ptr(), k, n_padded, y.data_ptr(), n_padded)
        else:
            lib().sw_qlinear(x.data_ptr(), m, x.stride(0), packed.data.data_ptr(), QUANT_TYPES[packed.kind], k, n_padded, y.data_ptr(), n_padded)
    return y if n_padded == packed.out_features else y[:, : packed.out_features].contiguous()


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    y = torch.empty_like(x)
    lib().sw_rmsnorm(x.data_ptr(), x.shape[0], x.shape[1], weight.data_ptr(), eps, y.data_ptr())
    return y


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """[M, 2F] = [gate | up] -> silu(gate) * up, [M, F]."""
    m, two_f = gate_up.shape
    out = torch.empty(m, two_f // 2, dtype=torch.float32)
    lib().sw_silu_mul(gate_up.data_ptr(), m, two_f // 2, out.data_ptr())
    return out
