"""``specwise train-draft``: data collection (cached) and the two trainers."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from specwise.drafters.eagle import save_eagle
from specwise.models.loader import load_checkpoint
from specwise.paths import cache_dir
from specwise.train.collect import Sample, collect
from specwise.train.prompt_pool import build_prompt_pool

if TYPE_CHECKING:
    from specwise.api import LLM


CHUNK = 1400
"""Prompts answered and cached together. The pool is prefix-stable (its first n
prompts are the same for any larger size), so a larger pool reuses the chunks a
smaller one collected and only answers the new prompts."""


def training_samples(llm: LLM, num_prompts: int, max_tokens: int, seed: int, log: Callable[[str], None] = print) -> list[Sample]:
    """The target's answers to the first ``num_prompts`` prompts of the pool, with
    features, in pool order; cached, since generating them is most of the cost of
    training."""
    pool = build_prompt_pool(num_prompts, seed)
    samples: list[Sample] = []
    for first in range(0, num_prompts, CHUNK):
        samples += _chunk_samples(llm, pool[first : first + CHUNK], first, max_tokens, seed, log)
    return samples


def _chunk_samples(llm: LLM, prompts: list[list[dict[str, str]]], first: int, max_tokens: int, seed: int, log: Callable[[str], None]) -> list[Sample]:
    key = hashlib.sha256(f"{llm.source}:{seed}:{max_tokens}:{first}:{len(prompts)}".encode()).hexdigest()[:16]
    path = cache_dir() / "train" / f"samples-{key}.pt"
    if path.exists():
        data = torch.load(path)
        return [Sample(t, p, f) for t, p, f in zip(data["tokens"], data["num_prompt"], data["features"])]
    start, done = time.perf_counter(), [0]

    def progress(k: int) -> None:
        done[0] += k
        if done[0] % 100 < k:
            log(f"collected {first + done[0]}/{first + len(prompts)} answers ({time.perf_counter() - start:.0f} s)")

    samples = collect(llm, prompts, max_tokens, on_done=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"tokens": [s.tokens for s in samples], "num_prompt": [s.num_prompt for s in samples], "features": [s.features for s in samples]}, path)
    return samples


def _head(llm: LLM) -> torch.Tensor:
    return llm.model.head_rows(torch.arange(llm.config.vocab_size)).contiguous()


def make_eagle(llm: LLM, samples: list[Sample], output: Path, epochs: int, seed: int, log: Callable[[str], None] = print) -> None:
    from specwise.train.eagle import train_eagle

    trained = train_eagle(llm.config, _head(llm), samples, epochs=epochs, seed=seed, log=log)
    meta = {"target": Path(str(llm.source)).name, "samples": len(samples), "positions": sum(s.features.shape[0] for s in samples), "epochs": epochs, "seed": seed}
    save_eagle(output, trained, meta)


def make_draft_model(llm: LLM, samples: list[Sample], output: Path, layers: list[int], epochs: int, seed: int, log: Callable[[str], None] = print) -> None:
    from specwise.train.draft_model import save_hf_dir, train_draft_model

    weights = load_checkpoint(llm.source, weights="fp32").weights
    trained = train_draft_model(llm.config, _head(llm), weights, layers, samples, epochs=epochs, seed=seed, log=log)
    save_hf_dir(output, replace(llm.config, num_layers=len(layers)), trained, llm.tokenizer)
