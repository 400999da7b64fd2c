"""Decode speed of specwise: plain vs transformers, and prompt lookup per Spec-Bench category.

Everything compared is measured in this one run, interleaved prompt by prompt,
so the ratios hold even on a noisy machine. Prints tables, then one JSON line.

    python benchmarks/bench_decode.py --per-category 10 --output benchmarks/results/decode.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

import torch

from specwise import LLM, Request, SamplingParams, SpeculativeConfig
from specwise.kv_cache import KVCache
from specwise.metrics import RequestStats

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MT_BENCH = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}


def spec_bench(per_category: int, mt_bench: int | None = None) -> list[Request]:
    """The first ``per_category`` records of each group; all 40 MT-bench
    conversations unless ``mt_bench`` caps them too."""
    out, seen = [], defaultdict(int)
    for line in (DATA / "spec_bench_dev.jsonl").read_text().splitlines():
        rec = json.loads(line)
        group = "multi-turn" if rec["category"] in MT_BENCH else rec["category"]
        if seen[group] < (per_category if group != "multi-turn" else mt_bench or 10**9):
            seen[group] += 1
            out.append(Request(id=str(rec["question_id"]), turns=rec["turns"], segment=group))
    return out


def step_costs(llm: LLM, rows: list[int], repeats: int = 20) -> dict[int, float]:
    """Median target forward time (ms) for a step of M rows at a 256-token context."""
    cache = KVCache(llm.config, 1, 512)
    llm.model.forward(torch.arange(256), torch.arange(256), torch.zeros(256, dtype=torch.long), cache)
    out = {}
    for m in rows:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            llm.model.forward(torch.arange(m), torch.arange(256, 256 + m), torch.zeros(m, dtype=torch.long), cache)
            times.append(time.perf_counter() - t)
        out[m] = 1000 * sorted(times)[len(times) // 2]
    return out


def vs_transformers(llm: LLM, prompts: list[str], new_tokens: int) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    from specwise.models.default import default_model_path

    path = default_model_path()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    params = SamplingParams(max_tokens=new_tokens, ignore_eos=True)
    ours_t = hf_t = 0.0
    for text in prompts:
        [r] = llm.generate([Request(id="t", prompt=text)], params, None)
        ours_t += r.stats.wall_s
        ids = torch.tensor([llm.encode_messages([{"role": "user", "content": text}], chat=True)])
        t = time.perf_counter()
        with torch.no_grad():
            hf.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        hf_t += time.perf_counter() - t
    n = new_tokens * len(prompts)
    return {"specwise_tok_s": n / ours_t, "transformers_tok_s": n / hf_t, "ratio": hf_t / ours_t}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-category", type=int, default=10, help="records per non-MT-bench group (all 40 MT-bench records always)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--ngram-min", type=int, default=2)
    ap.add_argument("--ngram-max", type=int, default=3)
    ap.add_argument("--weights", default="auto", help="auto (the GGUF's quantized matrices) or fp32")
    ap.add_argument("--policy", default="fixed", help="fixed (K every step) or adaptive")
    ap.add_argument("--skip-transformers", action="store_true", help="leave out the transformers comparison")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()

    llm = LLM(weights=args.weights)
    costs = step_costs(llm, [1, 2, 3, 4, 5, 6, 8, 12, 16, 32])
    print("step cost (ms) by rows:", {m: round(v, 1) for m, v in costs.items()})

    params = SamplingParams(max_tokens=args.max_tokens)
    spec = SpeculativeConfig("ngram", args.k, args.ngram_min, args.ngram_max, policy=args.policy)
    per_group: dict[str, list[RequestStats]] = defaultdict(lambda: [RequestStats(), RequestStats()])
    mismatches = 0
    requests = spec_bench(args.per_category)
    for warm in requests[:2]:  # neither side is scored cold
        llm.generate([warm], params, None)
        llm.generate([warm], params, spec)
    for i, req in enumerate(requests):
        out = {}
        for name in ("plain", "spec") if i % 2 == 0 else ("spec", "plain"):  # alternate who goes first
            llm.reset_prefix_cache()
            [out[name]] = llm.generate([req], params, None if name == "plain" else spec)
        plain, fast = out["plain"], out["spec"]
        mismatches += plain.token_ids != fast.token_ids
        per_group[req.segment][0].merge(plain.stats)
        per_group[req.segment][1].merge(fast.stats)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = []
    all_plain, all_spec = RequestStats(), RequestStats()
    print(f"\n{'group':<16}{'plain tok/s':>12}{'ngram tok/s':>12}{'speedup':>9}{'decode x':>9}{'accept':>8}{'acc/step':>9}  by position")
    for group, (p, s) in per_group.items():
        all_plain.merge(p)
        all_spec.merge(s)
        rows.append((group, p, s))
    for group, p, s in [*rows, ("all", all_plain, all_spec)]:
        pos = " ".join(f"{a:.2f}" for a in s.acceptance_by_position())
        print(f"{group:<16}{p.tokens_per_s:>12.1f}{s.tokens_per_s:>12.1f}{s.tokens_per_s / p.tokens_per_s:>8.2f}x"
              f"{s.decode_tokens_per_s / p.decode_tokens_per_s:>8.2f}x"
              f"{s.acceptance_rate:>8.2f}{s.mean_accepted_per_step:>9.2f}  {pos}")  # fmt: skip
    print(f"greedy outputs differing between plain and ngram: {mismatches}")
    print(f"peak RSS (specwise only, before loading transformers): {rss_mb:.0f} MB")

    hf = {}
    if not args.skip_transformers:
        hf = vs_transformers(llm, ["Explain why the sky is blue.", "Write a short story about a robot.", "What is 17 * 23? Show your work."], args.max_tokens)
        print(f"\nplain decoding, {args.max_tokens} tokens: specwise {hf['specwise_tok_s']:.1f} tok/s, "
              f"transformers generate() {hf['transformers_tok_s']:.1f} tok/s, ratio {hf['ratio']:.2f}x")  # fmt: skip

    summary = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "k": args.k,
        "policy": args.policy,
        "weights": llm.weight_format,
        "max_tokens": args.max_tokens,
        "step_cost_ms": costs,
        "groups": {
            g: {
                "requests_tokens": s.new_tokens,
                "plain_tok_s": round(p.tokens_per_s, 2),
                "ngram_tok_s": round(s.tokens_per_s, 2),
                "speedup": round(s.tokens_per_s / p.tokens_per_s, 3),
                "plain_decode_tok_s": round(p.decode_tokens_per_s, 2),
                "ngram_decode_tok_s": round(s.decode_tokens_per_s, 2),
                "decode_speedup": round(s.decode_tokens_per_s / p.decode_tokens_per_s, 3),
                "acceptance_rate": round(s.acceptance_rate, 3),
                "mean_accepted_per_step": round(s.mean_accepted_per_step, 3),
                "acceptance_by_position": [round(a, 3) for a in s.acceptance_by_position()],
            }
            for g, p, s in [*rows, ("all", all_plain, all_spec)]
        },
        "mismatches": mismatches,
        "peak_rss_mb": round(rss_mb),
        "vs_transformers": {k: round(v, 2) for k, v in hf.items()},
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
