"""Plain decoding on the default GGUF: specwise quantized, specwise fp32, llama.cpp.

Each side runs in its own process (so peak RSS is its own), all on 2 threads,
in rounds whose order rotates, after a warm-up round nobody is scored on. A
round measures prompt processing (one 512-token prompt fed whole, tokens/s)
and batch-1 greedy decode (128 tokens after it, tokens/s); figures are the
medians over rounds.

llama.cpp is the ``llama-cpp-python`` package in a venv of its own, which
compiles llama.cpp for this CPU (8-15 minutes, once):

    python3 -m venv /tmp/llamacpp-venv && /tmp/llamacpp-venv/bin/pip install llama-cpp-python
    python benchmarks/bench_fastpath.py --llama-venv /tmp/llamacpp-venv --output benchmarks/results/fastpath.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

PROMPT_TOKENS = 512
DECODE_TOKENS = 128

# One round of one side, run in a fresh process; prints one JSON line.
SPECWISE = textwrap.dedent(
    """
    import json, resource, sys, time
    import torch
    from specwise import LLM, Request, SamplingParams, SpeculativeConfig
    torch.set_num_threads(2)
    weights, text, n_prompt, n_decode, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    llm = LLM(max_model_len=2048, max_batched_tokens=n_prompt, weights=weights)
    prompt = llm.tokenizer.decode(llm.tokenizer.encode(text)[:n_prompt])
    n = len(llm.tokenizer.encode(prompt))
    plain = SpeculativeConfig("none")
    out = []
    for r in range(rounds + 1):  # round 0 warms up
        llm.reset_prefix_cache()
        t = time.perf_counter()
        llm.generate([Request(id="pp", prompt=prompt)], SamplingParams(max_tokens=1, ignore_eos=True), plain, chat=False)
        pp = time.perf_counter() - t
        llm.reset_prefix_cache()
        res = llm.generate([Request(id="d", prompt=prompt)], SamplingParams(max_tokens=n_decode + 1, ignore_eos=True), plain, chat=False)[0]
        decode = res.stats.wall_s - res.stats.ttft_s
        if r:
            out.append({"pp_tps": n / pp, "decode_tps": n_decode / decode})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from specwise.kv_cache import KVCache
    cache = KVCache(llm.config, 1, 512)  # step cost by rows: one sequence's verify rows at a 256-token context
    llm.model.forward(torch.arange(256), torch.arange(256), torch.zeros(256, dtype=torch.long), cache)
    steps = {}
    for m in (1, 2, 3, 4, 5, 6, 8, 12, 16, 32):
        times = []
        for _ in range(30):
            t = time.perf_counter()
            llm.model.forward(torch.arange(m), torch.arange(256, 256 + m), torch.zeros(m, dtype=torch.long), cache)
            times.append(time.perf_counter() - t)
        steps[m] = 1000 * sorted(times)[len(times) // 2]
    print(json.dumps({"rounds": out, "peak_rss_mb": rss, "weights": llm.weight_format, "step_ms": steps}))
    """
)

LLAMA = textwrap.dedent(
    """
    import json, resource, sys, time
    import llama_cpp
    model, text, n_prompt, n_decode, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_threads=2, n_threads_batch=2, n_batch=n_prompt, verbose=False)
    ids = llm.tokenize(text.encode(), add_bos=False, special=False)[:n_prompt]
    out = []
    for r in range(rounds + 1):
        llm.reset()
        t = time.perf_counter(); llm.eval(ids); pp = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(n_decode):
            llm.eval([llm.sample(temp=0.0)])
        decode = time.perf_counter() - t
        if r:
            out.append({"pp_tps": len(ids) / pp, "decode_tps": n_decode / decode})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rounds": out, "peak_rss_mb": rss, "version": llama_cpp.__version__}))
    """
)


def _prompt_text() -> str:
    """Held-out English prose and code, long enough for PROMPT_TOKENS: Spec-Bench turns."""
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "spec_bench_dev.jsonl"
    turns = [t for line in data.read_text().splitlines() for t in json.loads(line)["turns"]]
    return "\n\n".join(turns)[:20000]


def _run(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"{cmd[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-venv", type=Path, help="venv with llama-cpp-python (omit to skip llama.cpp)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    from specwise.models.default import default_model_path

    model, text = str(default_model_path()), _prompt_text()
    sides = {
        "specwise quantized": [sys.executable, "-c", SPECWISE, "auto"],
        "specwise fp32": [sys.executable, "-c", SPECWISE, "fp32"],
    }
    if args.llama_venv:
        sides["llama.cpp"] = [str(args.llama_venv / "bin" / "python"), "-c", LLAMA, model]
    results: dict[str, dict] = {name: {"rounds": []} for name in sides}
    names = list(sides)
    for r in range(args.rounds):  # one process per side and round, the order rotating
        for name in names[r % len(names) :] + names[: r % len(names)]:
            got = _run([*sides[name], text, str(PROMPT_TOKENS), str(DECODE_TOKENS), "1"])
            results[name]["rounds"] += got.pop("rounds")
            results[name]["peak_rss_mb"] = max(results[name].get("peak_rss_mb", 0), got.pop("peak_rss_mb"))
            results[name].update(got)
            print(name, results[name]["rounds"][-1], flush=True)
    for res in results.values():
        for key in ("pp_tps", "decode_tps"):
            res[key] = statistics.median(x[key] for x in res["rounds"])
    for name, res in results.items():
        if "step_ms" in res:
            one = res["step_ms"]["1"]
            print(f"{name} step ms by rows: " + ", ".join(f"{m}: {ms:.1f} ({ms / one:.2f}x)" for m, ms in res["step_ms"].items()))
    base = results.get("llama.cpp")
    print(
        f"\n{'side':<20} {'decode tok/s':>13} {'pp tok/s':>10} {'peak RSS MB':>12}"
        + ("  vs llama.cpp (decode, pp)" if base else "")
    )
    for name, res in results.items():
        rel = f"  {res['decode_tps'] / base['decode_tps']:.2f}x, {res['pp_tps'] / base['pp_tps']:.2f}x" if base else ""
        print(f"{name:<20} {res['decode_tps']:>13.1f} {res['pp_tps']:>10.1f} {res['peak_rss_mb']:>12.0f}{rel}")
    meta = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(), "threads": 2,
            "prompt_tokens": PROMPT_TOKENS, "decode_tokens": DECODE_TOKENS, "rounds": args.rounds, "model": Path(model).name}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
