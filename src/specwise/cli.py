"""``specwise``: one entry point with subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from specwise.errors import SpecwiseError
from specwise.weight_args import add_weight_arguments, weight_options

if TYPE_CHECKING:
    from specwise.api import LLM, Result, SpeculativeConfig
    from specwise.prompts import Request
    from specwise.sampling import SamplingParams


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _common() -> argparse.ArgumentParser:
    """Options shared by every subcommand that decodes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prompts", type=Path, help="JSONL file: id and one of prompt, messages, turns a line; optional segment")
    common.add_argument("--model", help="GGUF file or Hugging Face directory (default: the shipped SmolLM2-135M-Instruct)")
    add_weight_arguments(common)
    common.add_argument(
        "--drafter", default="ngram",
        help="none | ngram | suffix | draft:PATH | layerskip[:LAYERS] | eagle[:PATH] | auto | grammar, or a chain such as suffix+ngram (default: ngram; constrained requests put grammar first)",
    )  # fmt: skip
    common.add_argument("--draft-vocab", type=int, default=0, help="learned drafters pick among the N most frequent tokens (default: all)")
    common.add_argument("--num-speculative-tokens", "-k", type=int, default=4, help="K, most tokens drafted per step (default 4)")
    common.add_argument("--ngram-min", type=int, default=2, help="shortest suffix n-gram to match (default 2)")
    common.add_argument("--ngram-max", type=int, default=3, help="longest suffix n-gram to match (default 3)")
    common.add_argument("--max-tokens", type=_positive_int, default=128)
    common.add_argument("--temperature", type=float, default=0.0)
    common.add_argument("--top-p", type=float, default=1.0)
    common.add_argument("--top-k", type=int, default=0)
    common.add_argument("--seed", type=int, default=None)
    common.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    common.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-tokens")
    shape = common.add_argument_group("structured output (one of; a prompt line may carry its own response_format)")
    shape.add_argument("--json-schema", type=Path, metavar="FILE", help="the output is a JSON value that fits this JSON Schema")
    shape.add_argument("--json-object", action="store_true", help="the output is a JSON object")
    shape.add_argument("--regex", metavar="RE", help="the output matches this regular expression")
    shape.add_argument("--grammar", type=Path, metavar="FILE.lark", help="the output is a sentence of this Lark grammar")
    shape.add_argument("--choice", action="append", metavar="TEXT", help="the output is one of these strings (repeatable)")
    shape.add_argument("--reasoning-end", metavar="TEXT", help="the constraint starts after the output writes TEXT (e.g. </think>)")
    common.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True, help="apply the model's chat template (default on)")
    common.add_argument("--max-model-len", type=_positive_int, default=2048, help="context length to allocate per sequence (default 2048)")
    common.add_argument(
        "--max-batched-tokens", type=_positive_int, default=256,
        help="rows per step before drafts: decoding sequences plus prompt chunks (chunked prefill; default 256)",
    )  # fmt: skip
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specwise", description="Speculative decoding that takes the free tokens and avoids the traps.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _common()
    gen = sub.add_parser("generate", parents=[common], help="generate text; with no prompt, compare plain and speculative decoding on built-in prompts")
    gen.add_argument("prompt", nargs="?", help="a prompt (omit for the built-in comparison)")
    gen.add_argument("--policy", default="fixed", help="fixed (K every step) | adaptive (0..K per sequence and step); default fixed")
    gen.add_argument("--concurrency", type=_positive_int, default=1, help="requests decoded together (default 1)")
    gen.add_argument("--compare", action="store_true", help="also decode plainly and print both side by side")
    gen.add_argument("--output", type=Path, help="write one JSON result a line")
    bench = sub.add_parser("bench", parents=[common], help="sweep concurrency levels and policies over a prompt set")
    bench.add_argument("--concurrency", type=_int_list, default=[1, 2, 4, 8, 16, 32], help="comma-separated levels (default 1,2,4,8,16,32)")
    bench.add_argument("--policies", default="plain,fixed,adaptive", help="comma-separated: plain, fixed, adaptive")
    bench.add_argument("--limit", type=_positive_int, help="use only the first N prompts")
    bench.add_argument("--repeats", type=_positive_int, default=1, help="run the policies this many rounds, interleaved, and report medians (default 1)")
    bench.add_argument("--output", type=Path, required=True, help="R.json; a PNG plot is written beside it")
    train = sub.add_parser("train-draft", help="train a draft for the target on text it writes itself (prompts built from Python's docs)")
    train.add_argument("kind", choices=["eagle", "model"], help="eagle: a one-layer EAGLE head; model: a small draft model")
    train.add_argument("--model", help="target: GGUF file or Hugging Face directory (default: the shipped SmolLM2-135M-Instruct)")
    train.add_argument("--output", type=Path, required=True, help="eagle: a .safetensors file; model: a directory")
    train.add_argument("--prompts-n", type=_positive_int, default=2800, help="prompts in the generated training pool (default 2800)")
    train.add_argument("--max-tokens", type=_positive_int, default=128, help="answer length per prompt (default 128)")
    train.add_argument("--epochs", type=_positive_int, default=1)
    train.add_argument("--layers", default="0,10,20,29", help="model: target layers the draft's layers start from (default 0,10,20,29)")
    train.add_argument("--seed", type=int, default=0)
    srv = sub.add_parser("serve", help="serve an OpenAI-compatible API with per-request speculation and Prometheus /metrics")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=_port, default=8000)
    srv.add_argument("--model", help="GGUF file or Hugging Face directory (default: the shipped SmolLM2-135M-Instruct)")
    add_weight_arguments(srv)
    srv.add_argument("--drafter", default="ngram", help="drafters to load, comma-separated (ngram,eagle); the first serves requests that name none; none = plain only")
    srv.add_argument("--policy", choices=["adaptive", "fixed"], default="adaptive")
    srv.add_argument("--num-speculative-tokens", "-k", type=int, default=4, help="K for requests that do not set it (default 4)")
    srv.add_argument("--ngram-min", type=int, default=2)
    srv.add_argument("--ngram-max", type=int, default=3)
    srv.add_argument("--draft-vocab", type=int, default=0)
    srv.add_argument("--max-num-seqs", type=_positive_int, default=8, help="requests decoded together, one KV cache slot each (default 8)")
    srv.add_argument("--max-model-len", type=_positive_int, default=2048, help="context per slot (default 2048)")
    srv.add_argument("--max-batched-tokens", type=_positive_int, default=256, help="rows per step before drafts (default 256)")
    srv.add_argument("--max-queue", type=int, default=256, help="requests that may wait for a slot; beyond them new ones get 429 (default 256)")
    srv.add_argument("--api-key", default=os.environ.get("SPECWISE_API_KEY"), help="require Authorization: Bearer KEY on /v1 (default: $SPECWISE_API_KEY)")
    srv.add_argument("--served-model-name", help="the model name clients send (default: the model file's name)")
    srv.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds running requests get to finish after SIGTERM (default 30)")
    mp = sub.add_parser("map", help="replay a workload at several loads and configs, measure, recommend what to run, write a report")
    mp.add_argument("--workload", type=Path, help="JSONL (prompt format, with segment, max_tokens, arrival_s) or ShareGPT JSON (default: the built-in workload)")
    mp.add_argument("--concurrency", help="closed-loop levels, comma-separated (default 1,4,16 when no --rate is given)")
    mp.add_argument("--rate", help="open-loop request rates per second, comma-separated (Poisson arrivals)")
    mp.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the arrival gaps: 1 Poisson, < 1 burstier (default 1)")
    mp.add_argument("--configs", default="plain,fixed,adaptive", help="plain, fixed, adaptive, or policy:drafter such as adaptive:eagle (default plain,fixed,adaptive)")
    mp.add_argument("--drafter", default="ngram", help="drafter of configs that name none (default ngram)")
    mp.add_argument("--num-speculative-tokens", "-k", type=int, default=4, help="K (default 4)")
    mp.add_argument("--repeats", type=_positive_int, default=1, help="interleaved rounds; figures are medians, with their spread (default 1)")
    mp.add_argument("--max-tokens", type=_positive_int, default=64, help="output budget of requests that set none (default 64)")
    mp.add_argument("--slo", help="goodput objectives in seconds, e.g. ttft=1.0,tpot=0.1 (default: none)")
    mp.add_argument("--expected-concurrency", type=_positive_int, help="recommend for this concurrency (default: the highest measured)")
    mp.add_argument("--expected-rate", type=float, help="recommend for this request rate")
    mp.add_argument("--output", type=Path, default=Path("specwise-map"), help="directory for report.html, report.json, calibration.json (default ./specwise-map)")
    mp.add_argument("--endpoint", help="map an OpenAI-compatible server (specwise serve, vLLM, SGLang, llama.cpp) instead of the in-process engine")
    mp.add_argument("--baseline-endpoint", help="the same model served without speculation, for servers without a per-request switch")
    mp.add_argument("--served-model", help="model name to send to the endpoint (default: its first model)")
    mp.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token for the endpoint (default: $OPENAI_API_KEY)")
    mp.add_argument("--model", help="in-process: GGUF file or Hugging Face directory (default: the shipped SmolLM2-135M-Instruct)")
    add_weight_arguments(mp)
    mp.add_argument("--max-model-len", type=_positive_int, default=2048)
    mp.add_argument("--max-batched-tokens", type=_positive_int, default=256)
    mp.add_argument("--max-num-seqs", type=_positive_int, default=16, help="in-process slots for open-loop runs (default 16)")
    mp.add_argument("--seed", type=int, default=0, help="seed of the arrival times (default 0)")
    sim = sub.add_parser("simulate", help="predict latency and throughput at loads not measured, from a map's calibration.json")
    sim.add_argument("--calibration", type=Path, required=True, help="calibration.json written by specwise map (in-process)")
    sim.add_argument("--concurrency", help="closed-loop levels, comma-separated")
    sim.add_argument("--rate", help="open-loop request rates per second, comma-separated")
    sim.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the arrival gaps (default 1: Poisson)")
    sim.add_argument("--configs", help="configs to simulate (default: those the map measured)")
    sim.add_argument("--drafter", default="ngram", help="drafter of configs that name none (default ngram)")
    sim.add_argument("--num-speculative-tokens", "-k", type=int, default=4)
    sim.add_argument("--runs", type=_positive_int, default=3, help="seeded runs per config and load; figures are medians, with their spread (default 3)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--max-num-seqs", type=_positive_int, default=16, help="slots for open-loop loads (default 16)")
    sim.add_argument("--slo", help="goodput objectives in seconds, e.g. ttft=1.0,tpot=0.1")
    sim.add_argument("--output", type=Path, required=True, help="S.json: {\"rows\": [ROW...]}")
    sim.add_argument("--model", help="the model you mean to serve: a calibration of another is refused (default: not checked)")
    sim.add_argument("--force", action="store_true", help="use a calibration from another machine, kernel build or model")
    pl = sub.add_parser("plan", help="does speculation pay? expected tokens, speedup, best K, break-even acceptance and crossover, from a cost profile")
    pl.add_argument("--acceptance", required=True, help="acceptance per draft: one rate, or one per position (0.8,0.6,0.5)")
    pl.add_argument("--num-speculative-tokens", "-k", type=int, default=5, help="K, the most drafts considered (default 5)")
    pl.add_argument("--draft-cost", type=float, default=0.0, help="c: one draft round over one target step (0 for prompt lookup; default 0)")
    pl.add_argument("--verify-cost", help="a step-cost curve by hand, rows:time pairs such as 1:1.0,5:1.1,16:2.0 (default: the profile measured here)")
    pl.add_argument("--calibration", type=Path, help="take the step-cost profile from a map's calibration.json")
    pl.add_argument("--batch", type=_int_list, default=[1, 2, 4, 8, 16, 32], help="batch sizes to plan for (default 1,2,4,8,16,32)")
    pl.add_argument("--moe-experts", type=int, help="the target is a mixture of experts with N experts per layer")
    pl.add_argument("--moe-top-k", type=int, default=2, help="experts per token (default 2)")
    pl.add_argument("--moe-share", type=float, default=0.66, help="share of a token's weight bytes in its experts (default 0.66)")
    pl.add_argument("--model", help="the model whose measured profile to use (default: the shipped SmolLM2-135M-Instruct)")
    add_weight_arguments(pl)
    cal = sub.add_parser("calibrate", help="measure drafters here and cache the best (used by layerskip and auto)")
    cal.add_argument("--model", help="GGUF file or Hugging Face directory (default: the shipped SmolLM2-135M-Instruct)")
    add_weight_arguments(cal)
    cal.add_argument("--num-speculative-tokens", "-k", type=int, default=4)
    cal.add_argument("--draft-vocab", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "bench":
            return _bench(args)
        if args.command == "train-draft":
            return _train_draft(args)
        if args.command == "calibrate":
            return _calibrate(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "map":
            return _map(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "plan":
            from specwise.plan_cli import plan

            return plan(args)
    except SpecwiseError as exc:
        print(f"specwise: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("specwise: interrupted", file=sys.stderr)
        return 130
    return 0


def _constraint(args: argparse.Namespace):
    """The one constraint the flags ask for, checked before the model loads."""
    from specwise.structured.constraint import Constraint, compile_grammar, constraint_from_file

    given = []
    if args.json_schema is not None:
        given.append(constraint_from_file("json_schema", args.json_schema))
    if args.json_object:
        given.append(Constraint.json_object())
    if args.regex is not None:
        given.append(Constraint.regex(args.regex))
    if args.grammar is not None:
        given.append(constraint_from_file("grammar", args.grammar))
    if args.choice:
        given.append(Constraint.choice(args.choice))
    if len(given) > 1:
        raise SpecwiseError("give one of --json-schema, --json-object, --regex, --grammar, --choice")
    if given:
        compile_grammar(given[0])
    return given[0] if given else None


def _decoding(args: argparse.Namespace):
    from specwise.api import SpeculativeConfig
    from specwise.sampling import SamplingParams

    params = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, max_tokens=args.max_tokens,
        stop=tuple(args.stop), seed=args.seed, ignore_eos=args.ignore_eos,
        constraint=_constraint(args), reasoning_end=args.reasoning_end,
    )  # fmt: skip
    policy = getattr(args, "policy", "fixed")
    spec = SpeculativeConfig(args.drafter, args.num_speculative_tokens, args.ngram_min, args.ngram_max, policy, args.draft_vocab)
    return params, spec


def _check_output(path: Path | None) -> None:
    if path is not None and not path.parent.exists():
        raise SpecwiseError(f"output directory {path.parent} does not exist")


def _generate(args: argparse.Namespace) -> int:
    from specwise.api import LLM
    from specwise.demo_prompts import DEMO_PROMPTS
    from specwise.prompts import Request, load_prompts
    from specwise.report import print_comparison, print_results

    params, spec = _decoding(args)
    if args.prompt is not None and args.prompts is not None:
        raise SpecwiseError("give a prompt or --prompts, not both")
    if args.prompt is not None:
        requests = [Request(id="0", prompt=args.prompt)]
    elif args.prompts is not None:
        requests = load_prompts(args.prompts)
    else:
        requests, args.compare = DEMO_PROMPTS, True
    _check_output(args.output)

    llm = LLM(args.model, max_model_len=args.max_model_len, max_batched_tokens=args.max_batched_tokens, **weight_options(args))
    if args.compare:
        plain, results = _compare(llm, requests, params, spec, args.chat, args.concurrency)
        print_comparison(plain, results, spec)
    else:
        stream = len(requests) == 1
        on_text = (lambda _rid, text: print(text, end="", flush=True)) if stream else None
        results = llm.generate(requests, params, spec, chat=args.chat, concurrency=args.concurrency, on_text=on_text)
        if stream:
            print()
        print_results(results, spec)
    if args.output is not None:
        with open(args.output, "w", encoding="utf-8") as f:
            for result in results:
                f.write(json.dumps(result.to_dict()) + "\n")
    return 0


def _compare(
    llm: LLM, requests: list[Request], params: SamplingParams, spec: SpeculativeConfig, chat: bool, concurrency: int
) -> tuple[list[Result], list[Result]]:
    """Plain and speculative results, started alike: one untimed warm-up of each
    first (kernel build, drafter and cost profile land on neither side), then
    prompt by prompt in alternating order (whole runs, alternating, when several
    requests share the batch), each from a forgotten prefix cache."""
    from dataclasses import replace

    warm = replace(params, max_tokens=min(params.max_tokens, 8))
    for side in (spec, None):
        llm.generate(requests[:1], warm, side, chat=chat)
    plain, fast = [], []
    if concurrency > 1:
        for side, out in ((None, plain), (spec, fast)):
            llm.reset_prefix_cache()
            out += llm.generate(requests, params, side, chat=chat, concurrency=concurrency)
        return plain, fast
    for i, req in enumerate(requests):
        for side, out in ((spec, fast), (None, plain)) if i % 2 else ((None, plain), (spec, fast)):
            llm.reset_prefix_cache()
            out += llm.generate([req], params, side, chat=chat)
    return plain, fast


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from specwise.api import LLM
    from specwise.prompts import load_prompts
    from specwise.report import print_sweep
    from specwise.workload.plot import plot_sweep
    from specwise.workload.sweep import spec_for, sweep

    params, spec = _decoding(args)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in policies:
        spec_for(p, spec)
    if args.prompts is None:
        raise SpecwiseError("bench needs --prompts FILE.jsonl")
    _check_output(args.output)
    requests = load_prompts(args.prompts)[: args.limit]
    llm = LLM(args.model, max_model_len=args.max_model_len, max_batched_tokens=args.max_batched_tokens, **weight_options(args))
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("sweep", total=len(policies) * len(args.concurrency))

        def advance(row) -> None:
            progress.console.print(f"{row.policy:>8} x{row.concurrency:<3} p50 {row.p50_latency_s:.2f}s  {row.throughput_tok_s:.1f} tok/s")
            progress.advance(task)

        rows = sweep(llm, requests, params, spec, args.concurrency, policies, chat=args.chat, repeats=args.repeats, on_row=advance)
    args.output.write_text(json.dumps({"rows": [r.to_dict() for r in rows]}, indent=1))
    plot_sweep(rows, args.output.with_suffix(".png"))
    print_sweep(rows)
    return 0


def _train_draft(args: argparse.Namespace) -> int:
    from specwise.api import LLM
    from specwise.drafters.factory import parse_layers
    from specwise.train.run import make_draft_model, make_eagle, training_samples

    _check_output(args.output)
    layers = parse_layers(args.layers)
    llm = LLM(args.model, max_model_len=1024, **weight_options(args))
    samples = training_samples(llm, args.prompts_n, args.max_tokens, args.seed)
    if args.kind == "eagle":
        make_eagle(llm, samples, args.output, args.epochs, args.seed)
    else:
        make_draft_model(llm, samples, args.output, layers, args.epochs, args.seed)
    print(f"wrote {args.output}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from specwise.server.app import ServeConfig
    from specwise.server.run import serve

    config = ServeConfig(
        model=args.model, **weight_options(args), drafters=tuple(d.strip() for d in args.drafter.split(",") if d.strip()), policy=args.policy,
        num_speculative_tokens=args.num_speculative_tokens, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
        max_batched_tokens=args.max_batched_tokens, max_queue=args.max_queue, api_key=args.api_key,
        served_model_name=args.served_model_name, ngram_min=args.ngram_min, ngram_max=args.ngram_max, draft_vocab=args.draft_vocab,
    )  # fmt: skip
    if args.model is not None and not Path(args.model).expanduser().exists():
        raise SpecwiseError(f"model {args.model} does not exist (give a GGUF file or a Hugging Face directory)")
    return serve(config, args.host, args.port, args.shutdown_timeout)


def _map(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from specwise.mapper.options import parse_configs, parse_loads, parse_slo
    from specwise.mapper.records import Load
    from specwise.mapper.run import Plan, execute, write
    from specwise.mapper.summary import print_summary
    from specwise.mapper.workload import builtin_workload, load_workload

    if args.expected_concurrency is not None and args.expected_rate is not None:
        raise SpecwiseError("give --expected-concurrency or --expected-rate, not both")
    items = load_workload(args.workload) if args.workload is not None else builtin_workload()
    configs = parse_configs(args.configs, args.drafter, args.num_speculative_tokens)
    loads = parse_loads(args.concurrency if args.concurrency or args.rate else "1,4,16", args.rate, args.burstiness)
    expected = Load(concurrency=args.expected_concurrency) if args.expected_concurrency else None
    if args.expected_rate is not None:
        if args.expected_rate <= 0:
            raise SpecwiseError(f"--expected-rate must be > 0, got {args.expected_rate}")
        expected = Load(rate=args.expected_rate, burstiness=args.burstiness)
    plan = Plan(items, str(args.workload) if args.workload else "built-in", configs, loads, args.repeats, args.max_tokens, parse_slo(args.slo), expected, args.seed)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SpecwiseError(f"--output {args.output} is a file; give a directory") from None
    except OSError as exc:
        raise SpecwiseError(f"cannot make --output {args.output}: {exc.strerror}") from None
    console = Console(stderr=True)
    target = _map_target(args, console)
    if args.endpoint is not None:
        target.check_configs(configs)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("warming up, then mapping", total=plan.total_runs)

        def done(run) -> None:
            progress.console.print(f"{run.load.label:>7} {run.config.name:<18} round {run.repeat + 1}: {run.elapsed_s:.1f} s")
            progress.advance(task)

        runs, stopped = execute(target, plan, done)
    rep = write(args.output, target, plan, runs, stopped)
    print_summary(rep, args.output)
    if stopped == "interrupted":
        print(f"specwise: interrupted; wrote the {len(runs)} finished runs to {args.output}", file=sys.stderr)
        return 130
    if stopped:
        raise SpecwiseError(f"{stopped}; wrote the {len(runs)} finished runs to {args.output}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from specwise.mapper.options import parse_configs, parse_loads, parse_slo
    from specwise.mapper.summary import print_rows
    from specwise.simulator import Calibration, simulate

    if not args.concurrency and not args.rate:
        raise SpecwiseError("simulate needs --concurrency or --rate levels")
    loads = parse_loads(args.concurrency, args.rate, args.burstiness)
    _check_output(args.output)
    cal = Calibration.load(args.calibration, force=args.force, model=args.model)
    configs = parse_configs(args.configs, args.drafter, args.num_speculative_tokens) if args.configs else cal.configs()
    rows = simulate(cal, configs, loads, runs=args.runs, seed=args.seed, slo=parse_slo(args.slo), max_num_seqs=args.max_num_seqs)
    args.output.write_text(json.dumps({"rows": rows}, indent=1))
    print_rows(rows, f"simulated from {args.calibration}")
    return 0


def _map_target(args: argparse.Namespace, console):
    if args.endpoint is None:
        from specwise.api import LLM
        from specwise.mapper.engine_target import EngineTarget

        if args.baseline_endpoint:
            raise SpecwiseError("--baseline-endpoint needs --endpoint")
        with console.status("loading the model"):
            llm = LLM(args.model, max_model_len=args.max_model_len, max_batched_tokens=args.max_batched_tokens, **weight_options(args))
        return EngineTarget(llm, max_num_seqs=args.max_num_seqs)
    from specwise.mapper.endpoint import EndpointTarget

    target = EndpointTarget(args.endpoint, baseline_url=args.baseline_endpoint, model=args.served_model, api_key=args.api_key)
    target.probe()
    return target


def _calibrate(args: argparse.Namespace) -> int:
    from specwise.api import LLM, SpeculativeConfig
    from specwise.calibrate import auto_candidates, measure, store_auto

    llm = LLM(args.model, max_model_len=1024, **weight_options(args))
    spec = SpeculativeConfig("auto", args.num_speculative_tokens, draft_vocab=args.draft_vocab)
    results = measure(llm, spec, auto_candidates(llm, spec))
    for name, row in results.items():
        print(f"{name:>24}  {row['tokens_per_s']:6.1f} tok/s  x{row['speedup']:.2f}  acceptance {row['acceptance_rate']:.2f}")
    print(f"auto = {store_auto(llm, spec, results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
