"""Structured output on the JSONSchemaBench dev schemas, side by side in one run.

Coverage: the schemas llguidance compiles, per group. Speed, at batch 1 and
greedy, on a prompt asking for an object with the schema's fields, under the
schema closed as the tests close it (objects admit no unlisted keys), four ways:

- ``free``: the same prompt, unconstrained, plain decoding;
- ``plain``: constrained, plain decoding;
- ``drafter``: constrained, prompt lookup alone (K = 4, forced tokens off);
- ``forced+drafter``: constrained, the grammar's forced tokens, then prompt lookup.

Each schema runs all four in a rotating order, each from a forgotten prefix
cache, after one untimed warm-up of each. Tokens/s counts the decode (the
prefill excluded: the prompt is the same for all four). Mask time is the
grammar's work per emitted token in each step (checking drafts, the row
masks, consuming the emitted tokens).

    python benchmarks/bench_structured.py --per-group 8 --output benchmarks/results/structured.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from specwise import LLM, SamplingParams, SpeculativeConfig
from specwise.errors import SpecwiseError
from specwise.structured.constraint import Constraint, compile_grammar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import DATA_DIR  # noqa: E402
from tests.test_structured import closed, schema_prompt  # noqa: E402

CONFIGS = {
    "free": None,
    "plain": None,
    "drafter": SpeculativeConfig("ngram", 4, forced_tokens=False),
    "forced+drafter": SpeculativeConfig("ngram", 4),
}


def coverage(rows: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"compiled": 0, "total": 0})
    for row in rows:
        out[row["group"]]["total"] += 1
        try:
            compile_grammar(Constraint.json_schema(row["schema"]))
            out[row["group"]]["compiled"] += 1
        except SpecwiseError:
            pass
    return dict(out)


def run_one(llm: LLM, name: str, row: dict, max_tokens: int):
    constraint = None if name == "free" else Constraint.json_schema(closed(row["schema"]))
    llm.reset_prefix_cache()
    return llm.generate([schema_prompt(row["schema"])], SamplingParams(max_tokens=max_tokens, constraint=constraint), CONFIGS[name])[0]


def summarise(results: list) -> dict[str, float]:
    stats = [r.stats for r in results]
    decode_tokens = sum(s.new_tokens - s.prefills for s in stats)
    decode_s = sum(s.wall_s - s.prefill_s for s in stats)
    drafted, accepted = sum(s.drafted for s in stats), sum(s.accepted for s in stats)
    forced, tokens = sum(s.forced_tokens for s in stats), sum(s.new_tokens for s in stats)
    masks = [m for s in stats for m in s.mask_s_per_token]
    return {
        "requests": len(results), "tokens": tokens, "decode_tok_s": round(decode_tokens / decode_s, 2),
        "tokens_per_step": round(sum(s.new_tokens - s.prefills for s in stats) / max(1, sum(s.steps for s in stats)), 3),
        "acceptance": round(accepted / drafted, 3) if drafted else 0.0, "forced_share": round(forced / tokens, 3) if tokens else 0.0,
        "finished": sum(r.finish_reason == "stop" for r in results),
        "mask_ms_per_token_p50": round(1e3 * float(np.percentile(masks, 50)), 4) if masks else 0.0,
        "mask_ms_per_token_p99": round(1e3 * float(np.percentile(masks, 99)), 4) if masks else 0.0,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-group", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()

    rows = [json.loads(line) for line in (DATA_DIR / "schemas_dev.jsonl").read_text().splitlines() if line.strip()]
    cover = coverage(rows)
    chosen: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        try:
            compile_grammar(Constraint.json_schema(closed(row["schema"])))
        except SpecwiseError:
            continue
        if len(chosen[row["group"]]) < args.per_group:
            chosen[row["group"]].append(row)

    llm = LLM(max_model_len=2048)
    first = next(iter(chosen.values()))[0]
    for name in CONFIGS:  # warm-up: kernels, drafter, matcher templates land on no side
        run_one(llm, name, first, 8)
    results: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    names = list(CONFIGS)
    i = 0
    for group, group_rows in chosen.items():
        for row in group_rows:
            order = names[i % len(names) :] + names[: i % len(names)]
            i += 1
            for name in order:
                res = run_one(llm, name, row, args.max_tokens)
                results[group][name].append(res)
            print(f"{group:>15} {row['id'][:40]:<40} " + " ".join(f"{n}={results[group][n][-1].stats.decode_tokens_per_s:.1f}" for n in names), file=sys.stderr)

    table = {group: {name: summarise(res) for name, res in by_name.items()} for group, by_name in results.items()}
    table["overall"] = {name: summarise([r for g in results.values() for r in g[name]]) for name in names}
    for group, by_name in table.items():
        base = by_name["plain"]["decode_tok_s"]
        for name, row in by_name.items():
            row["vs_constrained_plain"] = round(row["decode_tok_s"] / base, 3)
    out = {"coverage": cover, "per_group": args.per_group, "max_tokens": args.max_tokens, "rows": table}
    args.output.write_text(json.dumps(out, indent=1))
    print(f"{'group':>15} {'config':>15} {'tok/s':>7} {'x plain':>8} {'tok/step':>8} {'accept':>7} {'forced':>7} {'mask p50 ms':>11} {'p99':>7}")
    for group, by_name in table.items():
        for name, r in by_name.items():
            print(f"{group:>15} {name:>15} {r['decode_tok_s']:7.1f} {r['vs_constrained_plain']:8.2f} {r['tokens_per_step']:8.2f} "
                  f"{r['acceptance']:7.2f} {r['forced_share']:7.2f} {r['mask_ms_per_token_p50']:11.3f} {r['mask_ms_per_token_p99']:7.3f}")  # fmt: skip
    print("coverage:", {g: f"{c['compiled']}/{c['total']}" for g, c in cover.items()})


if __name__ == "__main__":
    main()
