"""Every drafter against plain decoding, per Spec-Bench group, side by side in one run.

Batch 1, greedy, chat template, 128 new tokens. For each prompt, plain decoding
and every drafter run back to back, so the ratios hold on a noisy machine.
Then a draft-vocabulary sweep for the EAGLE head. Prints tables and writes JSON.

    python benchmarks/bench_drafters.py --per-category 6 \\
        --drafters ngram,layerskip,draft:/work/draft4@8192,eagle@8192,ngram+eagle@8192,auto@8192 \\
        --output benchmarks/results/drafters.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections import defaultdict
from datetime import date
from pathlib import Path

from bench_decode import spec_bench

from specwise import LLM, SamplingParams, SpeculativeConfig
from specwise.metrics import RequestStats


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def summarize(stats: RequestStats, plain: RequestStats) -> dict[str, object]:
    acc = stats.accepted_by_position
    conditional = [acc[0] / stats.drafted_by_position[0] if stats.drafted_by_position and stats.drafted_by_position[0] else 0.0]
    conditional += [acc[i] / acc[i - 1] if acc[i - 1] else 0.0 for i in range(1, len(acc))]
    return {
        "acceptance_rate": round(stats.acceptance_rate, 3),
        "accepted_per_step": round(stats.mean_accepted_per_step, 3),
        "acceptance_by_position": [round(a, 3) for a in stats.acceptance_by_position()],
        "conditional_by_position": [round(a, 3) for a in conditional],
        "draft_cost_ratio": round(stats.draft_cost_ratio, 4),
        "tokens_per_s": round(stats.tokens_per_s, 2),
        "speedup": round(plain.wall_s / stats.wall_s, 3) if stats.wall_s else 0.0,
        "decode_speedup": round(stats.decode_tokens_per_s / plain.decode_tokens_per_s, 3) if plain.decode_tokens_per_s else 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-category", type=int, default=6, help="records per Spec-Bench group (MT-bench: this many conversations)")
    ap.add_argument("--drafters", default="ngram,layerskip,eagle@8192,ngram+eagle@8192,auto@8192", help="NAME[@DRAFT_VOCAB],...")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--vocab-sweep", default="0,16384,8192,4096,2048,1024", help="EAGLE draft vocabularies (0 = all)")
    ap.add_argument("--vocab-per-category", type=int, default=2)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()

    llm = LLM()
    memory = {"target_mb": round(rss_mb())}
    drafters = [d for d in args.drafters.split(",") if d]
    params = SamplingParams(max_tokens=args.max_tokens)
    requests = spec_bench(args.per_category, mt_bench=args.per_category)
    stats: dict[str, dict[str, RequestStats]] = defaultdict(lambda: defaultdict(RequestStats))
    mismatches: dict[str, int] = defaultdict(int)
    for n, req in enumerate(requests):
        llm.reset_prefix_cache()
        [plain] = llm.generate([req], params, None)
        stats["plain"][req.segment].merge(plain.stats)
        for d in drafters:
            before = rss_mb()
            name, _, vocab = d.partition("@")  # eagle@8192: a draft vocabulary of 8192
            llm.reset_prefix_cache()
            [r] = llm.generate([req], params, SpeculativeConfig(name, args.k, draft_vocab=int(vocab or 0)))
            memory.setdefault(f"{d}_added_mb", round(rss_mb() - before))
            stats[d][req.segment].merge(r.stats)
            mismatches[d] += r.token_ids != plain.token_ids
        print(f"{n + 1}/{len(requests)} {req.segment}", flush=True)

    table: dict[str, dict[str, object]] = {}
    for d in drafters:
        table[d] = {}
        groups = sorted(stats[d])
        for g in [*groups, "all"]:
            mine = stats[d][g] if g != "all" else _merged(stats[d].values())
            base = stats["plain"][g] if g != "all" else _merged(stats["plain"].values())
            table[d][g] = summarize(mine, base)
        table[d]["mismatches"] = mismatches[d]
        print(f"\n{d}  (outputs differing from plain: {mismatches[d]})")
        print(f"{'group':>15} {'accept':>7} {'acc/step':>8} {'c':>6} {'speedup':>8} {'decode':>7}  conditional acceptance by position")
        for g in [*groups, "all"]:
            row = table[d][g]
            print(f"{g:>15} {row['acceptance_rate']:>7} {row['accepted_per_step']:>8} {row['draft_cost_ratio']:>6} {row['speedup']:>8} {row['decode_speedup']:>7}  {row['conditional_by_position']}")

    sweep = {}
    sweep_reqs = spec_bench(args.vocab_per_category, mt_bench=args.vocab_per_category)
    for vocab in (int(v) for v in args.vocab_sweep.split(",") if v):  # --vocab-sweep "" skips it
        total = RequestStats()
        for req in sweep_reqs:
            llm.reset_prefix_cache()
            [r] = llm.generate([req], params, SpeculativeConfig("eagle", args.k, draft_vocab=vocab))
            total.merge(r.stats)
        sweep[vocab or llm.config.vocab_size] = {
            "draft_ms_per_token": round(1000 * total.draft_s / total.drafted, 3),
            "target_ms_per_step": round(1000 * total.target_s / total.steps, 3),
            "acceptance_rate": round(total.acceptance_rate, 3),
            "accepted_per_step": round(total.mean_accepted_per_step, 3),
            "decode_tokens_per_s": round(total.decode_tokens_per_s, 2),
        }
        print(f"eagle vocab {vocab or llm.config.vocab_size:>6}: {sweep[vocab or llm.config.vocab_size]}", flush=True)
    memory["peak_rss_mb"] = round(_peak_mb())
    print("memory:", memory)
    out = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "args": vars(args) | {"output": str(args.output)},
        "requests": len(requests),
        "drafters": table,
        "vocab_sweep": sweep,
        "memory": memory,
    }
    if args.output:
        args.output.write_text(json.dumps(out, indent=1))


def _merged(items) -> RequestStats:  # type: ignore[no-untyped-def]
    total = RequestStats()
    for s in items:
        total.merge(s)
    return total


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
