"""The command-line options that choose what a model's matrices run as."""

from __future__ import annotations

import argparse

from specwise.models.formats import QUANT_TYPES, WEIGHTS


def add_weight_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", choices=WEIGHTS, default="auto",
        help="auto: a GGUF's Q8_0/Q4_0/Q4_1 matrices run as stored (others in fp32); fp32: dequantize every matrix (default auto)",
    )  # fmt: skip
    parser.add_argument(
        "--quantize", choices=sorted(QUANT_TYPES), help="quantize the matrices still in fp32 at load (a Hugging Face directory's)"
    )


def weight_options(args: argparse.Namespace) -> dict[str, str | None]:
    """``LLM`` keyword arguments for the options above."""
    return {"weights": getattr(args, "weights", "auto"), "quantize": getattr(args, "quantize", None)}
