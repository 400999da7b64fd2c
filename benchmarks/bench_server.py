"""Through the HTTP server vs in-process LLM.generate, side by side in one run.

The same prompts (first turns of a prompts file) and the same engine settings
(adaptive policy, prompt lookup K=4, greedy) run in this process through
``LLM.generate`` and through ``specwise serve`` (a subprocess on loopback,
streamed with httpx, N requests in flight) at each concurrency. Rounds
alternate which side goes first; every run tags its prompts with the run's
name, so no run finds another's prompts in the prefix cache. Both sides keep
libgomp's default wait policy, as `specwise serve` does. TTFT counts from a request's
admission in-process and from sending it over HTTP; inter-token latency is
the gap between streamed text chunks (one per engine step) on both sides.

With ``--wait-policies`` it also runs the server alone under other OpenMP
wait settings (restarted in alternation), to show what sleeping between
steps costs or saves.

    python benchmarks/spec_bench_subset.py --per-group 6 --output /tmp/sb36.jsonl
    python benchmarks/bench_server.py --prompts /tmp/sb36.jsonl --concurrency 1,16 --repeats 2 \\
        --wait-policies default,PASSIVE,ACTIVE --output benchmarks/results/server.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from specwise import LLM, Request, SamplingParams, SpeculativeConfig
from specwise.prompts import load_prompts

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server_util import ServeProcess  # noqa: E402

MAX_LEN = 1024


def _prompts(path: Path, limit: int) -> list[str]:
    out = []
    for r in load_prompts(path)[:limit]:
        text = r.prompt or (r.turns[0] if r.turns else r.messages[-1]["content"])  # type: ignore[index]
        out.append(text[:2000])
    return out


def _row(side: str, c: int, tokens: int, wall: float, ttft: list[float], gaps: list[float]) -> dict[str, object]:
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 4) if xs else 0.0  # noqa: E731
    return {
        "side": side, "concurrency": c, "tokens": tokens, "wall_s": round(wall, 3), "throughput_tok_s": round(tokens / wall, 2),
        "p50_ttft_s": pct(ttft, 50), "p99_ttft_s": pct(ttft, 99), "p50_itl_s": pct(gaps, 50), "p99_itl_s": pct(gaps, 99),
    }  # fmt: skip


def in_process(llm: LLM, prompts: list[str], c: int, max_tokens: int, spec: SpeculativeConfig) -> dict[str, object]:
    chunks: dict[str, list[float]] = {}

    def on_text(rid: str, _text: str) -> None:
        chunks.setdefault(rid, []).append(time.perf_counter())

    requests = [Request(id=str(i), prompt=p) for i, p in enumerate(prompts)]
    start = time.perf_counter()
    results = llm.generate(requests, SamplingParams(max_tokens=max_tokens, temperature=0), spec, concurrency=c, on_text=on_text)
    wall = time.perf_counter() - start
    gaps = [b - a for times in chunks.values() for a, b in zip(times, times[1:])]
    return _row("in-process", c, sum(len(r.token_ids) for r in results), wall, [r.stats.ttft_s for r in results], gaps)


async def through_server(url: str, prompts: list[str], c: int, max_tokens: int) -> dict[str, object]:
    queue = list(enumerate(prompts))
    ttft: list[float] = []
    gaps: list[float] = []
    tokens = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while queue:
            _, prompt = queue.pop(0)
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0,
                    "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
            sent, last = time.perf_counter(), None
            async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
                resp.raise_for_status()
                async for line in resp.aiter_lines():
                    # The client shares the two cores with the server: it parses only the
                    # usage chunk and spots text chunks by a substring.
                    if line.startswith('data: {"id"') and '"usage":{' in line:
                        tokens += json.loads(line[6:])["usage"]["completion_tokens"]
                    if '"delta":{"content":"' not in line:
                        continue
                    now = time.perf_counter()
                    if last is None:
                        ttft.append(now - sent)
                    else:
                        gaps.append(now - last)
                    last = now

    limits = httpx.Limits(max_connections=c + 4, max_keepalive_connections=c + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(c)))
        wall = time.perf_counter() - start
    return _row("server", c, tokens, wall, ttft, gaps)


def _tag(prompts: list[str], name: str) -> list[str]:
    return [f"[{name}] {p}" for p in prompts]


def _median(rows: list[dict[str, object]]) -> dict[str, object]:
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, float) and key != "concurrency":
            out[key] = round(statistics.median(float(r[key]) for r in rows), 4)  # type: ignore[arg-type]
    out["runs"] = len(rows)
    return out


def _serve(wait_policy: str, slots: int) -> ServeProcess:
    """The server with OMP_WAIT_POLICY set to ``wait_policy`` ("default": unset, as `serve` runs)."""
    saved = os.environ.pop("OMP_WAIT_POLICY", None)
    if wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = wait_policy
    try:
        proc = ServeProcess("--max-num-seqs", str(slots), "--max-model-len", str(MAX_LEN))
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
        if saved is not None:
            os.environ["OMP_WAIT_POLICY"] = saved
    proc.wait_ready()
    return proc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=36)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--wait-policies", default="", help="also run the server alone under these OpenMP wait settings, e.g. default,PASSIVE,ACTIVE")
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    prompts = _prompts(args.prompts, args.limit)
    spec = SpeculativeConfig("ngram", 4, policy="adaptive")
    slots = max(levels)

    llm = LLM(max_model_len=MAX_LEN, max_num_seqs=slots)
    server = _serve("default", slots)
    print("warm-up", flush=True)  # the whole prompt set once on each side: caches, and each side's policy learns alike
    in_process(llm, _tag(prompts, "warm"), 4, 32, spec)
    asyncio.run(through_server(server.url, _tag(prompts, "warm"), 4, 32))

    runs: dict[tuple[str, int], list[dict[str, object]]] = {}
    for r in range(args.repeats):
        for c in levels:
            sides = ["in-process", "server"] if (r + levels.index(c)) % 2 == 0 else ["server", "in-process"]
            for side in sides:
                tagged = _tag(prompts, f"run {r} c{c}")
                row = in_process(llm, tagged, c, args.max_tokens, spec) if side == "in-process" else asyncio.run(through_server(server.url, tagged, c, args.max_tokens))
                print(json.dumps(row), flush=True)
                runs.setdefault((side, c), []).append(row)
    server.stop()
    rows = [_median(v) for v in runs.values()]
    ratios = {}
    for c in levels:
        srv, ip = _median(runs[("server", c)]), _median(runs[("in-process", c)])
        ratios[str(c)] = round(float(srv["throughput_tok_s"]) / float(ip["throughput_tok_s"]), 3)  # type: ignore[arg-type]

    wait_rows = []
    if args.wait_policies:
        llm.loop.close()
        del llm
        policies = args.wait_policies.split(",")
        policy_runs: dict[tuple[str, int], list[dict[str, object]]] = {}
        for r in range(args.repeats):
            for policy in policies if r % 2 == 0 else policies[::-1]:
                proc = _serve(policy, slots)
                asyncio.run(through_server(proc.url, _tag(prompts[:4], "warm"), 2, 16))
                for c in levels:
                    row = asyncio.run(through_server(proc.url, _tag(prompts, f"wait {r} {policy} c{c}"), c, args.max_tokens))
                    row["side"] = f"server, OMP_WAIT_POLICY={policy}"
                    print(json.dumps(row), flush=True)
                    policy_runs.setdefault((policy, c), []).append(row)
                proc.stop()
        wait_rows = [_median(v) for v in policy_runs.values()]

    result = {"rows": rows, "server_over_in_process_throughput": ratios, "wait_policy_rows": wait_rows,
              "prompts": len(prompts), "max_tokens": args.max_tokens, "repeats": args.repeats, "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    for row in rows + wait_rows:
        print(f"{row['side']:>34} x{row['concurrency']:<3} {row['throughput_tok_s']:7.1f} tok/s  TTFT p50 {row['p50_ttft_s']:.3f} "
              f"p99 {row['p99_ttft_s']:.3f}  ITL p50 {row['p50_itl_s']:.3f} p99 {row['p99_itl_s']:.3f}")  # fmt: skip
    print("server / in-process throughput:", ratios)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
