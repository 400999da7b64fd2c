"""The drafters' side of bench_suffix.py without the clock: prompt lookup, suffix and their
chain at fixed K = 4, batch 1, on the same two workloads, as tokens per target step (per
group) and rows verified per token. Deterministic, so it settles what wall-time ratios on
a drifting machine cannot: which drafter's proposals the target takes more of.

    python benchmarks/suffix_steps.py
"""

import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_suffix import repetitive, spec_bench

from specwise import LLM, SamplingParams, SpeculativeConfig


def main() -> None:
    llm = LLM(max_num_seqs=16)
    p = SamplingParams(max_tokens=128)
    for wname, reqs in (("spec-bench", spec_bench(4)), ("repetitive", repetitive(20))):
        for d in ("ngram", "suffix", "suffix+ngram"):
            llm.reset_prefix_cache()
            llm.forget_traffic()
            out = llm.generate(reqs, p, SpeculativeConfig(d, 4, policy="fixed"), concurrency=1)
            g = collections.defaultdict(lambda: [0, 0, 0])
            for r in out:
                x = g[r.segment or ""]
                x[0] += r.stats.new_tokens
                x[1] += r.stats.steps
                x[2] += r.stats.drafted
            tok = sum(v[0] for v in g.values())
            steps = sum(v[1] for v in g.values())
            dr = sum(v[2] for v in g.values())
            groups = {k: round(v[0] / v[1], 2) for k, v in sorted(g.items())}
            print(
                f"{wname} {d}: {tok} tokens in {steps} steps, {tok / steps:.3f} a step, {(steps + dr) / tok:.3f} rows a token; per group {groups}",
                flush=True,
            )


if __name__ == "__main__":
    main()
