"""Write the built-in workload of ``specwise map`` (src/specwise/data/workload.jsonl).

Thirty requests, six in each of five segments that draft differently: ``summarise``
(a docstring to summarise), ``code-edit`` (a short function to rewrite, so the answer
copies much of the prompt), ``context-qa`` (a passage and a question it answers),
``writing`` (open-ended, little to copy) and ``json-extract`` (a function or docstring
to describe under a JSON schema). The passages come from Python's standard library
(docstrings via ``inspect.getdoc``, sources via ``inspect.getsource``), so the file
can be rebuilt anywhere, offline, and holds only text under Python's own licence. Each prompt
stays under PROMPT_LIMIT characters so prefill is cheap for a 135M model.

The text depends on the Python version: the committed file was written by CPython
3.11.7 (PYTHON below). Output is deterministic for a given version.

    python benchmarks/make_workload.py [--output PATH]
"""

from __future__ import annotations

import argparse
import colorsys
import copy
import difflib
import doctest
import fnmatch
import functools
import glob
import heapq
import html
import inspect
import json
import pprint
import random
import re
import sched
import shlex
import shutil
import statistics
import subprocess
import tempfile
import textwrap
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

PYTHON = "3.11.7"
"""The Python that wrote the committed file (a test rebuilds it under this one only)."""
OUTPUT = Path(__file__).resolve().parents[1] / "src" / "specwise" / "data" / "workload.jsonl"
PROMPT_LIMIT = 1500
PASSAGE_LIMIT = 1250
"""Docstrings longer than this are cut at a line break."""

MAX_TOKENS = {
    "summarise": (64, 72, 56, 64, 72, 56),
    "code-edit": (88, 96, 80, 88, 80, 96),
    "context-qa": (48, 56, 48, 56, 48, 56),
    "writing": (64, 56, 72, 64, 56, 72),
    "json-extract": (48, 56, 64, 48, 48, 56),
}
"""Each request's output budget, by position in its segment: 48..96, mean about 64."""

SUMMARISE = [heapq, sched, tempfile, subprocess, doctest, copy]

CODE_EDITS: list[tuple[Any, str]] = [
    (colorsys.rgb_to_hsv, "Add type hints to the parameters and the return value of this function."),
    (colorsys.hls_to_rgb, "Add a docstring to this function that says what it converts and what it returns."),
    (shlex.quote, "Rename the parameter `s` to `text` everywhere in this function."),
    (colorsys.rgb_to_yiq, "Add type hints to the parameters and the return value of this function."),
    (statistics.median_low, "Rename the variable `n` to `count` everywhere in this function."),
    (glob.has_magic, "Add a docstring to this function that says what it checks."),
]
RENAMED = {shlex.quote: "s", statistics.median_low: "n"}

CONTEXT_QA: list[tuple[Any, str, str]] = [
    # (documented object, question, text the passage must hold for the question to be answerable)
    (textwrap.TextWrapper, "What is the default width, and what does it limit?", "width (default: 70)"),
    (functools.lru_cache, "What happens to the cache when maxsize is set to None?", "grow without bound"),
    (
        subprocess.run,
        "What does run() raise when check is True and the command exits with a non-zero code?",
        "CalledProcessError",
    ),
    (shutil.copytree, "When the symlinks flag is false, what is copied for a symbolic link?", "contents of the files pointed to"),
    (zipfile.ZipFile, "Which modes can a ZipFile be opened in?", "exclusive create"),
    (urllib.parse.urlsplit, "What is the scheme argument used for?", "default value of the scheme"),
]

WRITING = [
    "Write a short poem about a lighthouse keeper who is learning to play the violin.",
    "Write a friendly note to a neighbour asking to borrow their ladder this weekend.",
    "Describe a rainy afternoon in a small second-hand bookshop in four sentences.",
    "Write the opening paragraph of a mystery story set on a night train through the mountains.",
    "Give three tips for someone who wants to start running in the mornings, one sentence each.",
    "Write a short product description for a water bottle that keeps drinks cold for a whole day.",
]

_NAME = {"type": "string", "maxLength": 40}
_NAMES = {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 8}
SIGNATURE_SCHEMA = {
    "type": "object",
    "properties": {"name": _NAME, "parameters": _NAMES, "returns_value": {"type": "boolean"}},
    "required": ["name", "parameters", "returns_value"],
    "additionalProperties": False,
}
KIND_SCHEMA = {
    "type": "object",
    "properties": {"name": _NAME, "kind": {"type": "string", "enum": ["function", "method"]}, "raises": _NAMES},
    "required": ["name", "kind", "raises"],
    "additionalProperties": False,
}
MODULE_SCHEMA = {
    "type": "object",
    "properties": {"module": _NAME, "functions": _NAMES, "classes": _NAMES},
    "required": ["module", "functions", "classes"],
    "additionalProperties": False,
}
SIGNATURE_ASK = "Describe this function as JSON: its name, the names of its parameters, and whether it returns a value."
KIND_ASK = "Describe this code as JSON: its name, whether it is a function or a method, and the exceptions it raises."
JSON_EXTRACTS: list[tuple[Any, str, dict[str, Any]]] = [
    (textwrap.shorten, SIGNATURE_ASK, SIGNATURE_SCHEMA),
    (random.Random.choice, KIND_ASK, KIND_SCHEMA),
    (
        difflib,
        "Describe this module documentation as JSON: the module's name, the functions it lists and the classes it lists.",
        MODULE_SCHEMA,
    ),
    (html.escape, SIGNATURE_ASK, SIGNATURE_SCHEMA),
    (fnmatch.filter, KIND_ASK, KIND_SCHEMA),
    (pprint.pformat, SIGNATURE_ASK, SIGNATURE_SCHEMA),
]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=OUTPUT)
    args = ap.parse_args(argv)
    segments = {
        "summarise": [_summarise(m) for m in SUMMARISE],
        "code-edit": [_code_edit(f, ask) for f, ask in CODE_EDITS],
        "context-qa": [_context_qa(o, q, answer) for o, q, answer in CONTEXT_QA],
        "writing": [(f"writing-{i}", text, None) for i, text in enumerate(WRITING, 1)],
        "json-extract": [_json_extract(o, ask, schema) for o, ask, schema in JSON_EXTRACTS],
    }
    rows = []
    for position in range(6):  # interleaved, so any prefix of the file mixes the segments
        for segment, requests in segments.items():
            rid, prompt, schema = requests[position]
            if len(prompt) >= PROMPT_LIMIT:
                raise SystemExit(f"{rid}: prompt is {len(prompt)} characters (limit {PROMPT_LIMIT})")
            row: dict[str, Any] = {"id": rid, "segment": segment, "prompt": prompt, "max_tokens": MAX_TOKENS[segment][position]}
            if schema is not None:
                row["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": re.sub(r"[^A-Za-z0-9_]", "_", rid), "schema": schema},
                }
            rows.append(row)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SystemExit("ids repeat")
    args.output.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} requests to {args.output}")


def _summarise(module: Any) -> tuple[str, str, None]:
    passage = _passage(inspect.getdoc(module))
    return (
        f"summarise-{module.__name__}",
        f"Summarise this documentation of Python's {module.__name__} module in two or three sentences.\n\n{passage}",
        None,
    )


def _code_edit(func: Any, ask: str) -> tuple[str, str, None]:
    source = _source(func)
    old = RENAMED.get(func)
    if old is not None and not re.search(rf"\b{old}\b", source):
        raise SystemExit(f"{func.__qualname__} has no {old!r} to rename")
    prompt = f"{ask} Reply with the whole rewritten function in a Python code block.\n\n```python\n{source}```"
    return f"code-edit-{_label(func)}", prompt, None


def _context_qa(obj: Any, question: str, answer: str) -> tuple[str, str, None]:
    passage = _passage(inspect.getdoc(obj))
    if answer not in passage:
        raise SystemExit(f"the passage for {obj.__qualname__} no longer holds {answer!r}")
    prompt = f"Read this passage from the documentation of Python's {obj.__module__}.{obj.__qualname__}, then answer the question.\n\n{passage}\n\nQuestion: {question}"
    return f"context-qa-{_label(obj)}", prompt, None


def _json_extract(obj: Any, ask: str, schema: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    text = _passage(inspect.getdoc(obj)) if inspect.ismodule(obj) else f"```python\n{_source(obj)}```"
    return f"json-extract-{_label(obj)}", f"{ask}\n\n{text}", schema


def _label(obj: Any) -> str:
    """``shlex.quote``, ``random.Random.choice``, ``difflib``: what an id names."""
    return obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"


def _source(func: Any) -> str:
    return textwrap.dedent(inspect.getsource(func)).rstrip() + "\n"


def _passage(doc: str | None) -> str:
    """The docstring's leading lines that fit PASSAGE_LIMIT."""
    if not doc:
        raise SystemExit("an object chosen for its docstring has none")
    kept: list[str] = []
    for line in doc.splitlines():
        if len("\n".join([*kept, line])) > PASSAGE_LIMIT:
            break
        kept.append(line)
    return "\n".join(kept).rstrip()


if __name__ == "__main__":
    main()
