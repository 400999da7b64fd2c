"""`specwise plan`: the planner's tables for one acceptance and cost profile."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from specwise.errors import SpecwiseError
from specwise.planner import MoE, StepCost, best_k, break_even, crossover, expected_tokens, linear_cost, speedup
from specwise.weight_args import weight_options


def _acceptance(text: str) -> float | list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SpecwiseError(f"--acceptance takes rates in [0, 1], got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise SpecwiseError(f"--acceptance takes rates in [0, 1], got {text!r}")
    return values[0] if len(values) == 1 else values


def _curve(text: str) -> StepCost:
    points: dict[int, float] = {}
    try:
        for part in text.split(","):
            rows, _, seconds = part.partition(":")
            points[int(rows)] = float(seconds)
    except ValueError:
        raise SpecwiseError(f"--verify-cost takes rows:time pairs such as 1:1.0,5:1.1, got {text!r}") from None
    return linear_cost(points)


def _profile(args: argparse.Namespace) -> tuple[StepCost, str]:
    if args.verify_cost and args.calibration:
        raise SpecwiseError("give --verify-cost or --calibration, not both")
    if args.verify_cost:
        return _curve(args.verify_cost), "the curve given by hand"
    if args.calibration:
        try:
            profile = json.loads(Path(args.calibration).read_text())["step_cost_profile"]
        except OSError as exc:
            raise SpecwiseError(f"cannot read {args.calibration}: {exc.strerror}") from None
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SpecwiseError(f"{args.calibration} is not a calibration with a step-cost profile (written by specwise map in-process)") from None
        return linear_cost(dict(zip(profile["rows"], profile["seconds"]))), f"the profile in {args.calibration}"
    from specwise.api import LLM
    from specwise.costs import step_cost_model

    llm = LLM(args.model, max_model_len=512, **weight_options(args))
    costs = step_cost_model(llm.model, llm.model_key)  # measured here once, a few seconds, then cached
    return linear_cost(dict(zip(costs.rows, costs.seconds))), "the step-cost profile measured on this machine"


def plan(args: argparse.Namespace) -> int:
    acceptance = _acceptance(args.acceptance)
    k = args.num_speculative_tokens
    if not 0 <= k <= 32:
        raise SpecwiseError(f"-k must be in 0..32, got {k}")
    if args.draft_cost < 0:
        raise SpecwiseError(f"--draft-cost must be >= 0, got {args.draft_cost}")
    cost, source = _profile(args)
    if args.moe_experts is not None:
        moe = MoE(args.moe_experts, args.moe_top_k, args.moe_share)
        cost, source = moe.scale(cost), f"{source}, as a mixture of {moe.experts} experts (top-{moe.top_k}, {moe.expert_share:.0%} of bytes in experts)"
    batches = sorted(set(args.batch))
    console = Console()
    console.print(f"acceptance {args.acceptance}, draft cost c = {args.draft_cost:g}, step cost from {source}")
    e = expected_tokens(acceptance, k)
    console.print(f"E = {e:.2f} tokens per verify step with K = {k}; speedup {speedup(acceptance, k, cost, args.draft_cost, batches[0]):.2f}x at batch {batches[0]}")
    table = Table(title="by draft length")
    table.add_column("K", justify="right")
    table.add_column("E", justify="right")
    for b in batches:
        table.add_column(f"speedup b={b}", justify="right")
    for kk in range(k + 1):
        table.add_row(str(kk), f"{expected_tokens(acceptance, kk):.2f}", *[f"{speedup(acceptance, kk, cost, args.draft_cost, b):.2f}" for b in batches])
    console.print(table)
    per_batch = Table(title="by batch size")
    for col in ("batch", "best K", "its speedup", f"break-even acceptance at K={k}"):
        per_batch.add_column(col, justify="right")
    for b in batches:
        best, s = best_k(acceptance, k, cost, args.draft_cost, b)
        even = break_even(k, cost, args.draft_cost, b)
        per_batch.add_row(str(b), str(best), f"{s:.2f}", "never pays" if even is None else f"{even:.3f}")
    console.print(per_batch)
    cross = crossover(acceptance, k, cost, args.draft_cost, batches)
    console.print(f"crossover: {'no K > 0 beats plain from batch ' + str(cross) if cross else 'speculation pays at every batch size given'}")
    return 0
