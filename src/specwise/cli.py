"""``specwise``: one entry point with subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from specwise.errors import SpecwiseError


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specwise", description="Speculative decoding that takes the free tokens and avoids the traps.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate text; with no prompt, compare plain and speculative decoding on built-in prompts")
    gen.add_argument("prompt", nargs="?", help="a prompt (omit for the built-in comparison)")
    gen.add_argument("--prompts", type=Path, help="JSONL file: id and one of prompt, messages, turns a line")
    gen.add_argument("--model", help="GGUF file or Hugging Face directory (default: the shipped SmolLM2-135M-Instruct)")
    gen.add_argument("--drafter", default="ngram", help="none | ngram (default: ngram)")
    gen.add_argument("--num-speculative-tokens", "-k", type=int, default=4, help="K, tokens drafted per step (default 4)")
    gen.add_argument("--ngram-min", type=int, default=1)
    gen.add_argument("--ngram-max", type=int, default=3)
    gen.add_argument("--compare", action="store_true", help="also decode plainly and print both side by side")
    gen.add_argument("--max-tokens", type=_positive_int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-tokens")
    gen.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True, help="apply the model's chat template (default on)")
    gen.add_argument("--max-model-len", type=_positive_int, default=2048, help="context length to allocate (default 2048)")
    gen.add_argument("--output", type=Path, help="write one JSON result a line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
    except SpecwiseError as exc:
        print(f"specwise: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("specwise: interrupted", file=sys.stderr)
        return 130
    return 0


def _generate(args: argparse.Namespace) -> int:
    from specwise.api import LLM, SpeculativeConfig
    from specwise.demo_prompts import DEMO_PROMPTS
    from specwise.prompts import Request, load_prompts
    from specwise.report import print_comparison, print_results
    from specwise.sampling import SamplingParams

    params = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, max_tokens=args.max_tokens,
        stop=tuple(args.stop), seed=args.seed, ignore_eos=args.ignore_eos,
    )  # fmt: skip
    spec = SpeculativeConfig(args.drafter, args.num_speculative_tokens, args.ngram_min, args.ngram_max)
    if args.prompt is not None and args.prompts is not None:
        raise SpecwiseError("give a prompt or --prompts, not both")
    if args.prompt is not None:
        requests = [Request(id="0", prompt=args.prompt)]
    elif args.prompts is not None:
        requests = load_prompts(args.prompts)
    else:
        requests, args.compare = DEMO_PROMPTS, True
    if args.output is not None and args.output.parent and not args.output.parent.exists():
        raise SpecwiseError(f"output directory {args.output.parent} does not exist")

    llm = LLM(args.model, max_model_len=args.max_model_len)
    stream = len(requests) == 1 and not args.compare
    on_text = (lambda _rid, text: print(text, end="", flush=True)) if stream else None
    results = llm.generate(requests, params, spec, chat=args.chat, on_text=on_text)
    if stream:
        print()
    if args.compare:
        plain = llm.generate(requests, params, None, chat=args.chat)
        print_comparison(plain, results, spec)
    else:
        print_results(results, spec)
    if args.output is not None:
        with open(args.output, "w", encoding="utf-8") as f:
            for result in results:
                f.write(json.dumps(result.to_dict()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
