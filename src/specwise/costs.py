"""The step-cost profile the adaptive policy starts from: target forward time by rows.

Measured once per model, machine and kernel build, then cached; the policy
keeps refining it online from the steps the engine actually runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from specwise.kv_cache import KVCache
from specwise.models import native
from specwise.models.llama import LlamaModel
from specwise.paths import cache_dir
from specwise.policy import CostModel

PROFILE_ROWS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256)
CONTEXT = 256


def _profile(model: LlamaModel, rows: list[int], repeats: int = 5) -> list[float]:
    cache = KVCache(model.config, 1, CONTEXT + max(rows))
    model.forward(torch.arange(CONTEXT), torch.arange(CONTEXT), torch.zeros(CONTEXT, dtype=torch.long), cache)
    for m in rows:  # untimed: the first forwards after a long prefill run slow, and would skew the small row counts
        model.forward(torch.zeros(m, dtype=torch.long), torch.arange(CONTEXT, CONTEXT + m), torch.zeros(m, dtype=torch.long), cache)
    # Rounds over all row counts, and the fastest of each: a transient slowdown (another
    # process, an OpenMP team still spinning) then neither hits one range of rows nor
    # sets the estimate.
    best = [float("inf")] * len(rows)
    for _ in range(repeats):
        for i, m in enumerate(rows):
            start = time.perf_counter()
            model.forward(torch.zeros(m, dtype=torch.long), torch.arange(CONTEXT, CONTEXT + m), torch.zeros(m, dtype=torch.long), cache)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _path(model_key: str) -> Path:
    key = hashlib.sha256(f"v3:{model_key}:{native.build_id()}:{os.cpu_count()}:{torch.get_num_threads()}:{list(PROFILE_ROWS)}".encode()).hexdigest()[:16]
    return cache_dir() / "costs" / f"{key}.json"


def cached_step_costs(model_key: str) -> CostModel | None:
    """The profile measured here before, if any (no model needed to read it)."""
    path = _path(model_key)
    if path.exists():
        try:
            return CostModel.load(path)
        except (ValueError, KeyError, json.JSONDecodeError):
            pass  # a damaged cache file is re-measured
    return None


def step_cost_model(model: LlamaModel, model_key: str) -> CostModel:
    """Profiled once per model and machine (a few seconds), then read from the cache;
    beyond the last profiled row count the model extrapolates linearly."""
    cached = cached_step_costs(model_key)
    if cached is not None:
        return cached
    rows = list(PROFILE_ROWS)
    costs = CostModel(rows, _profile(model, rows))
    costs.save(_path(model_key))
    return costs
