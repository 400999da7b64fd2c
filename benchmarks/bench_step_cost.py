"""Where a step's time goes: target forward time by rows and context, prompt feeding
by length, and the time to feed a prompt set's prompts.

These are the numbers that bound batching: decode rows at 16 sequences are
compute-bound, and prompt rows cost the same at any concurrency, so the
prompt-feeding time of a set is a floor on its wall time at every concurrency.

    python benchmarks/bench_step_cost.py --prompts /tmp/sb48.jsonl \\
        --output benchmarks/results/step_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

from specwise import LLM, SamplingParams
from specwise.kv_cache import KVCache
from specwise.models.llama import LlamaModel
from specwise.prompts import load_prompts


def median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2]


def decode_ms(model: LlamaModel, rows: int, context: int, repeats: int = 7) -> float:
    """One row for each of ``rows`` sequences, each with ``context`` cached positions."""
    cache = KVCache(model.config, rows, context + 1)
    for slot in range(rows):
        n = torch.arange(context)
        model.forward(n % 1000, n, torch.full((context,), slot), cache)
    tokens, positions, slots = torch.zeros(rows, dtype=torch.long), torch.full((rows,), context), torch.arange(rows)
    return 1e3 * median_s(lambda: model.forward(tokens, positions, slots, cache), repeats)


def prompt_ms(model: LlamaModel, length: int, repeats: int = 3) -> float:
    """Feeding one prompt of ``length`` tokens in one step (logits for its last row only)."""
    cache = KVCache(model.config, 1, length)
    n = torch.arange(length)
    return 1e3 * median_s(lambda: model.forward(n % 1000, n, torch.zeros(length, dtype=torch.long), cache, torch.tensor([length - 1])), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=Path, help="also time feeding this set's prompts (one token generated a turn)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    llm = LLM()
    decode = {f"{rows}x{ctx}": round(decode_ms(llm.model, rows, ctx), 2) for rows in (1, 4, 16) for ctx in (32, 256, 1024)}
    for key, ms in decode.items():
        print(f"decode rows x context {key}: {ms} ms")
    prompts = {length: round(prompt_ms(llm.model, length), 1) for length in (128, 512, 1024)}
    for length, ms in prompts.items():
        print(f"prompt of {length}: {ms} ms ({ms / length:.2f} ms a token)")
    out: dict[str, object] = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(), "decode_ms": decode, "prompt_ms": prompts}
    if args.prompts:
        requests = load_prompts(args.prompts)
        start = time.perf_counter()
        results = llm.generate(requests, SamplingParams(max_tokens=1))
        feed_s = time.perf_counter() - start
        tokens = sum(r.stats.prompt_tokens for r in results)
        # Later turns carry one-token answers in their history here, so this slightly
        # undercounts the feeding a real run does.
        out["prompt_set"] = {"requests": len(requests), "prompt_tokens_longest_turn": tokens, "feed_s": round(feed_s, 2)}
        print(f"feeding {len(requests)} requests' prompts ({tokens} tokens in each one's longest turn): {feed_s:.1f} s")
    args.output.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
