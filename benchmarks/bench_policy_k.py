"""Batch-1 prompt lookup: fixed K against the adaptive policy at two caps on K.

For each Spec-Bench prompt, plain decoding and every configuration run back to
back (interleaved), so the ratios hold on a noisy machine. Each configuration
keeps one policy object across the prompts, as a server would, so the adaptive
policy's acceptance estimates carry over from request to request.

    python benchmarks/bench_policy_k.py --per-category 4 --output benchmarks/results/policy_k.json
"""

from __future__ import annotations

import argparse
import json
import platform
from collections import defaultdict
from datetime import date
from pathlib import Path

from bench_decode import spec_bench

from specwise import LLM, SamplingParams, SpeculativeConfig

CONFIGS = {
    "plain": SpeculativeConfig("none"),
    "fixed K=4": SpeculativeConfig("ngram", 4, policy="fixed"),
    "adaptive K<=4": SpeculativeConfig("ngram", 4, policy="adaptive"),
    "adaptive K<=8": SpeculativeConfig("ngram", 8, policy="adaptive"),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-category", type=int, default=4, help="records per Spec-Bench group (MT-bench: this many conversations)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    llm = LLM()
    params = SamplingParams(max_tokens=args.max_tokens)
    policies = {name: llm.make_policy(spec) for name, spec in CONFIGS.items()}
    requests = spec_bench(args.per_category, mt_bench=args.per_category)
    wall: dict[str, dict[str, float]] = {name: defaultdict(float) for name in CONFIGS}
    tokens: dict[str, float] = defaultdict(float)
    differ = 0
    for i, req in enumerate(requests):
        outs = {}
        for name, spec in CONFIGS.items():
            llm.reset_prefix_cache()  # every configuration feeds the whole prompt
            [res] = llm.generate([req], params, spec, policy=policies[name])
            wall[name][req.segment] += res.stats.wall_s
            outs[name] = res.token_ids
        tokens[req.segment] += len(outs["plain"])
        differ += sum(ids != outs["plain"] for ids in outs.values())
        print(f"{i + 1}/{len(requests)} {req.segment}", flush=True)
    groups = sorted(tokens)
    print(f"\n| group | {' | '.join(f'{n} tok/s' for n in CONFIGS)} | {' | '.join(f'{n} x plain' for n in CONFIGS if n != 'plain')} |")
    print("|---" * (2 * len(CONFIGS)) + "|")
    rows = {}
    for g in [*groups, "all"]:
        tok = sum(tokens.values()) if g == "all" else tokens[g]
        w = {n: (sum(wall[n].values()) if g == "all" else wall[n][g]) for n in CONFIGS}
        rows[g] = {n: round(tok / w[n], 2) for n in CONFIGS}
        ratios = [f"{w['plain'] / w[n]:.2f}" for n in CONFIGS if n != "plain"]
        print(f"| {g} | {' | '.join(f'{rows[g][n]:.1f}' for n in CONFIGS)} | {' | '.join(ratios)} |")
    print(f"\noutputs differing from plain: {differ}")
    out = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(), "requests": len(requests), "tokens_per_s": rows, "differing": differ}
    print(json.dumps(out))
    if args.output:
        args.output.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
