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
from pathlib import Path

import torch

from specwise.errors import SpecwiseError
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
        "sw_rmsnorm": [ptr, i64, i64, ptr, f32, ptr],
        "sw_silu_mul": [ptr, i64, i64, ptr],
        "sw_rope_store": [ptr, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, i64],
        "sw_attention": [ptr, i64, i64, i64, i64, i64, ptr, ptr, i64, ptr, ptr, f32, ptr],
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


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """[N, K] (out, in) -> panels [ceil(N/NR), K, NR], zero-padded, for ``linear``."""
    n, k = weight.shape
    panels = -(-n // NR)
    padded = torch.zeros(panels * NR, k, dtype=torch.float32)
    padded[:n] = weight
    return padded.view(panels, NR, k).transpose(1, 2).contiguous()


def linear(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """x [M, K] -> [M, out_features]; batch-invariant per row."""
    m, k = x.shape
    n_padded = packed.shape[0] * NR
    y = torch.empty(m, n_padded, dtype=torch.float32)
    if m:
        lib().sw_linear(x.data_ptr(), m, x.stride(0), packed.data_ptr(), k, n_padded, y.data_ptr(), n_padded)
    return y if n_padded == out_features else y[:, :out_features].contiguous()


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
