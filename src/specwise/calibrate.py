"""Calibration: measure drafters on this machine and remember the best.

``layerskip`` without layers and ``auto`` resolve through here. Each candidate
decodes the built-in prompts at batch 1 (greedy, fixed length) side by side
with plain decoding; the winner by decode speed is cached per model, machine
and K, so the measurement runs once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from specwise.demo_prompts import DEMO_PROMPTS
from specwise.drafters.factory import default_eagle_path
from specwise.metrics import RequestStats
from specwise.models import native
from specwise.paths import cache_dir
from specwise.sampling import SamplingParams

if TYPE_CHECKING:
    from specwise.api import LLM, SpeculativeConfig

MAX_TOKENS = 64


def _cache_file(llm: LLM, spec: SpeculativeConfig) -> os.PathLike[str]:
    key = f"{llm.model_key}:{native.build_id()}:{os.cpu_count()}:{torch.get_num_threads()}:{spec.num_speculative_tokens}:{spec.draft_vocab}"
    return cache_dir() / "calibration" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _load(llm: LLM, spec: SpeculativeConfig) -> dict[str, object]:
    path = _cache_file(llm, spec)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def _store(llm: LLM, spec: SpeculativeConfig, entry: dict[str, object]) -> None:
    path = _cache_file(llm, spec)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {**_load(llm, spec), **entry}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def measure(llm: LLM, spec: SpeculativeConfig, drafters: list[str]) -> dict[str, dict[str, float]]:
    """Decode speed of plain and each drafter on the built-in prompts, and its
    ratio to plain (measured in the same run)."""
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
    results: dict[str, dict[str, float]] = {}
    for name in ["none", *drafters]:
        stats = RequestStats()
        llm.reset_prefix_cache()
        for r in llm.generate(DEMO_PROMPTS, params, replace(spec, drafter=name, policy="fixed")):
            stats.merge(r.stats)
        results[name] = {"tokens_per_s": stats.decode_tokens_per_s, "acceptance_rate": stats.acceptance_rate}
    base = results["none"]["tokens_per_s"]
    for row in results.values():
        row["speedup"] = row["tokens_per_s"] / base if base else 0.0
    return results


def layerskip_candidates(num_layers: int) -> list[str]:
    return [str(max(1, round(num_layers * f))) for f in (0.2, 0.35, 0.5, 0.65)]


def best_layerskip(llm: LLM, spec: SpeculativeConfig) -> str:
    cached = _load(llm, spec).get("layerskip")
    if isinstance(cached, str):
        return cached
    results = measure(llm, spec, [f"layerskip:{n}" for n in layerskip_candidates(len(llm.model.layers))])
    best = max((k for k in results if k != "none"), key=lambda k: results[k]["tokens_per_s"]).partition(":")[2]
    _store(llm, spec, {"layerskip": best, "layerskip_measured": results})
    return best


def auto_candidates(llm: LLM, spec: SpeculativeConfig) -> list[str]:
    names = ["ngram", f"layerskip:{best_layerskip(llm, spec)}"]
    if default_eagle_path(str(llm.source)).exists():
        names += ["eagle", "ngram+eagle"]
    return names


def best_drafter(llm: LLM, spec: SpeculativeConfig) -> str:
    cached = _load(llm, spec).get("auto")
    if isinstance(cached, str):
        return cached
    return store_auto(llm, spec, measure(llm, spec, auto_candidates(llm, spec)))


def store_auto(llm: LLM, spec: SpeculativeConfig, results: dict[str, dict[str, float]]) -> str:
    best = max(results, key=lambda k: results[k]["tokens_per_s"])
    _store(llm, spec, {"auto": best, "auto_measured": results})
    return best
