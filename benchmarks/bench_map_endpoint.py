"""The same map in-process and through `specwise serve`, side by side in one run.

The built-in workload (or ``--workload``) under plain, fixed and adaptive at
each concurrency, first through the in-process engine, then through the
server (a subprocess on loopback, the mapper's streaming HTTP client) with the
per-request speculation switch, alternating which side goes first per load.
Both sides warm up untimed first. Acceptance through the server is read twice,
from its /metrics counters and from the responses' usage, and the two must
agree.

    python benchmarks/bench_map_endpoint.py --concurrency 1,4 --output benchmarks/results/map_endpoint.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specwise import LLM
from specwise.mapper.endpoint import EndpointTarget
from specwise.mapper.engine_target import EngineTarget
from specwise.mapper.measures import rows
from specwise.mapper.options import parse_configs, parse_loads
from specwise.mapper.run import Plan, execute
from specwise.mapper.workload import builtin_workload, load_workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server_util import ServeProcess  # noqa: E402

MAX_LEN = 2048
SLOTS = 16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", type=Path)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--configs", default="plain,fixed,adaptive")
    ap.add_argument("--output", type=Path, required=True)
    args = ap.parse_args()
    items = load_workload(args.workload) if args.workload else builtin_workload()
    configs = parse_configs(args.configs, "ngram", 4)
    server = ServeProcess("--drafter", "ngram", "--max-num-seqs", str(SLOTS), "--max-model-len", str(MAX_LEN))
    llm = LLM(max_model_len=MAX_LEN)
    server.wait_ready()
    try:
        sides = {"in-process": EngineTarget(llm, max_num_seqs=SLOTS), "server": EndpointTarget(server.url)}
        sides["server"].probe()
        out: dict[str, list] = {"in-process": [], "server": []}
        agreement = []
        for i, load in enumerate(parse_loads(args.concurrency, None, 1.0)):
            for name in list(sides)[:: 1 if i % 2 == 0 else -1]:
                plan = Plan(items, "built-in" if not args.workload else str(args.workload), configs, [load])
                runs, stopped = execute(sides[name], plan)
                assert stopped is None, stopped
                out[name] += [r for r in rows(runs, plan.slo) if r["segment"] == "all"]
                if name == "server":
                    for run in runs:
                        if run.config.speculates and run.acceptance is not None:
                            usage = (sum(r.drafted or 0 for r in run.records), sum(r.accepted or 0 for r in run.records))
                            agreement.append({"config": run.config.name, "load": load.label, "metrics": [run.acceptance.drafted, run.acceptance.accepted],
                                              "usage": list(usage), "source": run.acceptance.source})  # fmt: skip
                print(f"{load.label} {name} done", file=sys.stderr)
    finally:
        server.stop()
    table = []
    for a in out["in-process"]:
        b = next(r for r in out["server"] if r["config"] == a["config"] and r["concurrency"] == a["concurrency"])
        table.append({"config": a["config"], "concurrency": a["concurrency"],
                      "throughput_in_process": a["throughput_tok_s"], "throughput_server": b["throughput_tok_s"],
                      "server_over_in_process": round(b["throughput_tok_s"] / a["throughput_tok_s"], 3),
                      "p50_latency_in_process": a["p50_latency_s"], "p50_latency_server": b["p50_latency_s"],
                      "p50_ttft_in_process": a["p50_ttft_s"], "p50_ttft_server": b["p50_ttft_s"],
                      "acceptance_in_process": a["acceptance_rate"], "acceptance_server": b["acceptance_rate"]})  # fmt: skip
    args.output.write_text(json.dumps({"rows": table, "acceptance_agreement": agreement, "raw": out}, indent=1))
    for t in table:
        print(json.dumps(t))
    for a in agreement:
        print(json.dumps(a))


if __name__ == "__main__":
    main()
