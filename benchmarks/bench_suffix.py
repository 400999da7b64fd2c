"""Drafts from the traffic: suffix, prompt lookup and auto against plain, side by side.

Two workloads: Spec-Bench dev (the first N records of each group) and a
repetitive one built from it, as agentic traffic is: one extraction template
(the same instructions, a JSON reply) over different input texts. Each
config has its own engine. Per (workload, concurrency): every config once
untimed, then the timed rounds; a round resets every engine's prefix cache,
suffix store, auto's choices and policy, so each config starts alike and the
suffix drafter learns only from the earlier requests of its own round, and
then runs the configs interleaved by chunks of 4 x concurrency requests, the
order rotating. "fixed" is prompt lookup at K = 4 every step; ngram, suffix
and auto use the adaptive policy. x plain is paired: each round's throughput
over plain's in the same round, the median round reported with the rounds'
range (the machine drifts by more than the gaps between drafters within
minutes). Greedy outputs are checked against plain's.

    python benchmarks/bench_suffix.py --per-group 4 --concurrency 1,4,16 --output benchmarks/results/suffix.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from statistics import median

from specwise import LLM, Request, SamplingParams, SpeculativeConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "spec_bench_dev.jsonl"
MT_BENCH = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
CONFIGS = {
    "plain": ("none", "fixed"),
    "fixed": ("ngram", "fixed"),
    "ngram": ("ngram", "adaptive"),
    "suffix": ("suffix", "adaptive"),
    "auto": ("auto", "adaptive"),
}
"""name -> (drafter, policy): "fixed" is prompt lookup at K = 4 every step, the rest adaptive."""
TEMPLATE = (
    'Extract from the text below a JSON object with the keys "title", "people", "places", "topics" and "summary". '
    "Lists are JSON arrays of strings; reply with the JSON object only.\n\nText: {text}"
)


def spec_bench(per_group: int) -> list[Request]:
    taken: dict[str, list[Request]] = defaultdict(list)
    for line in DATA.read_text().splitlines():
        rec = json.loads(line)
        group = "multi-turn" if rec["category"] in MT_BENCH else rec["category"]
        if len(taken[group]) < per_group:
            taken[group].append(Request(id=str(rec["question_id"]), turns=rec["turns"], segment=group))
    return [g[i] for i in range(per_group) for g in taken.values() if i < len(g)]


def repetitive(n: int) -> list[Request]:
    """One template over n different texts (Spec-Bench's longer inputs, cut to ~600 chars)."""
    texts = []
    for line in DATA.read_text().splitlines():
        turn = json.loads(line)["turns"][0]
        if len(turn) > 400:
            texts.append(turn[:600].rsplit(" ", 1)[0])
    return [Request(id=f"x{i}", prompt=TEMPLATE.format(text=t), segment="extraction") for i, t in enumerate(texts[:n])]


def drafting_cost(llm: LLM, requests: int = 10_000, length: int = 96) -> dict:
    """Draft time per sequence with the store full of ``requests`` outputs: windows of
    Spec-Bench text (its own n-gram statistics), contexts drawn the same way."""
    from specwise.drafters.suffix import SuffixDrafter, SuffixStore
    from specwise.sequence import Sequence

    stream = [
        t for line in DATA.read_text().splitlines() for turn in json.loads(line)["turns"] for t in llm.tokenizer.encode(turn)
    ]
    rng = random.Random(0)
    store = SuffixStore()
    start = time.perf_counter()
    for _ in range(requests):
        i = rng.randrange(len(stream) - length)
        store.add(stream[i : i + length])
    fill_s = time.perf_counter() - start
    drafter, times, drafted = SuffixDrafter(store), [], 0
    for n in range(2000):
        i = rng.randrange(len(stream) - 400)
        seq = Sequence(f"c{n}", stream[i : i + rng.randrange(50, 400)], 10, SamplingParams())
        t = time.perf_counter()
        [draft] = drafter.propose([seq], [8])
        times.append(time.perf_counter() - t)
        drafted += len(draft.tokens)
        drafter.release(seq)
    times.sort()
    mem = store.memory()
    return {"requests": mem["requests"], "tokens": mem["tokens"], "approx_mb": round(mem["approx_bytes"] / 1e6, 1), "insert_us_per_token": round(1e6 * fill_s / mem["tokens"], 2),
            "draft_us_p50": round(1e6 * times[len(times) // 2], 1), "draft_us_p99": round(1e6 * times[int(len(times) * 0.99)], 1), "mean_draft_len": round(drafted / len(times), 2)}  # fmt: skip


class Runner:
    """One config on its own engine: its prefix cache, suffix store, auto's choices and
    policy carry over from one chunk of a run to the next, as in one long run, while
    the other configs' chunks run in between."""

    def __init__(self, config: str) -> None:
        drafter, policy_name = CONFIGS[config]
        self.spec = SpeculativeConfig(drafter, 4, policy=policy_name)
        self.llm = LLM(max_num_seqs=16)
        self.reset()

    def reset(self) -> None:
        self.llm.reset_prefix_cache()
        self.llm.forget_traffic()
        self.policy = self.llm.make_policy(self.spec) if self.spec.speculates else None
        self.wall = self.drafted = self.accepted = 0.0
        self.groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.outputs: list[list[int]] = []

    def run(self, requests: list[Request], concurrency: int, params: SamplingParams) -> None:
        start = time.perf_counter()
        results = self.llm.generate(requests, params, self.spec, concurrency=concurrency, policy=self.policy)
        self.wall += time.perf_counter() - start
        for r in results:
            self.groups[r.segment or ""][0] += r.stats.new_tokens
            self.groups[r.segment or ""][1] += r.stats.wall_s
            self.drafted += r.stats.drafted
            self.accepted += r.stats.accepted
            self.outputs.append(r.token_ids)

    def summary(self) -> dict:
        return {
            "tok_s": sum(t for t, _ in self.groups.values()) / self.wall,
            "groups": {g: t / s for g, (t, s) in self.groups.items()},
            "acceptance": self.accepted / self.drafted if self.drafted else 0.0,
            "tokens": self.outputs,
        }


def one_round(
    runners: dict[str, Runner], requests: list[Request], concurrency: int, params: SamplingParams, r: int
) -> dict[str, dict]:
    """Every config over the requests, interleaved by chunks of 4 x concurrency requests
    (who goes first rotating by chunk and round): each config's chunk runs within a
    minute of the others', so the machine's drift lands on all of them alike."""
    for runner in runners.values():
        runner.reset()
    names, size = list(runners), 4 * concurrency
    for n, i in enumerate(range(0, len(requests), size)):
        shift = (r + n) % len(names)
        for name in names[shift:] + names[:shift]:
            runners[name].run(requests[i : i + size], concurrency, params)
    return {name: runner.summary() for name, runner in runners.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-group", type=int, default=4)
    ap.add_argument("--repetitive", type=int, default=24, help="requests of the repetitive workload")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--workloads", default="spec-bench,repetitive", help="to rerun some cells only")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    unknown = set(args.workloads.split(",")) - {"spec-bench", "repetitive"}
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)} (choose from spec-bench, repetitive)")
    runners = {config: Runner(config) for config in CONFIGS}
    llm = runners["plain"].llm
    cost = drafting_cost(llm)
    print(f"suffix drafting with {cost['requests']} requests ({cost['tokens']} tokens, ~{cost['approx_mb']} MB) stored: "
          f"p50 {cost['draft_us_p50']} us, p99 {cost['draft_us_p99']} us a sequence; insertion {cost['insert_us_per_token']} us a token", flush=True)  # fmt: skip
    params = SamplingParams(max_tokens=args.max_tokens)
    builders = {"spec-bench": lambda: spec_bench(args.per_group), "repetitive": lambda: repetitive(args.repetitive)}
    workloads = {name: builders[name]() for name in args.workloads.split(",")}
    out: dict[str, dict] = {}
    for name, requests in workloads.items():
        for c in (int(x) for x in args.concurrency.split(",")):
            one_round(runners, requests[:4], c, params, 0)  # warm-up, untimed
            rounds: dict[str, list[dict]] = defaultdict(list)
            for r in range(args.rounds):
                for config, got in one_round(runners, requests, c, params, r).items():
                    rounds[config].append(got)
            plain = rounds["plain"]
            row = {}
            for config, got in rounds.items():
                # Paired: each round against plain's in the same round, then the median
                # round; the spread is the rounds' range.
                ratios = sorted(g["tok_s"] / p["tok_s"] for g, p in zip(got, plain))
                group_x = {
                    g: median([run_["groups"][g] / p["groups"][g] for run_, p in zip(got, plain)]) for g in got[0]["groups"]
                }
                mismatches = sum(a != b for g in got for a, b in zip(g["tokens"], plain[0]["tokens"]))
                row[config] = {"tok_s": round(median([g["tok_s"] for g in got]), 2), "x_plain": round(median(ratios), 3),
                               "x_plain_range": [round(ratios[0], 3), round(ratios[-1], 3)], "acceptance": round(median([g["acceptance"] for g in got]), 3),
                               "groups_x_plain": {g: round(v, 3) for g, v in group_x.items()}, "greedy_mismatches": mismatches}  # fmt: skip
                print(
                    f"{name:<11} c={c:<3} {config:<7} {row[config]['tok_s']:7.1f} tok/s  {row[config]['x_plain']:.2f}x plain "
                    f"({ratios[0]:.2f}-{ratios[-1]:.2f})  acc {row[config]['acceptance']:.2f}  mismatches {mismatches}",
                    flush=True,
                )
            if c == 1:
                groups = sorted(plain[0]["groups"])
                print(
                    "   per group x plain: "
                    + "; ".join(
                        f"{g}: " + ", ".join(f"{k} {row[k]['groups_x_plain'][g]:.2f}" for k in CONFIGS if k != "plain")
                        for g in groups
                    )
                )
            out[f"{name}@{c}"] = row
    meta = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(), "weights": llm.weight_format,
            "workloads": args.workloads, "per_group": args.per_group, "repetitive": args.repetitive, "max_tokens": args.max_tokens, "rounds": args.rounds}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, "drafting_cost": cost, "results": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
