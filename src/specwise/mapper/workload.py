"""The requests a map replays, read from a file or from the built-in workload.

Two formats: the JSONL prompt format (see ``specwise.prompts``) with an optional
per-line ``max_tokens`` and ``arrival_s``, and a ShareGPT-style ``.json`` list of
conversations, of which the opening up to the first human turn is sent. Every
mistake in a file is a one-line SpecwiseError naming the file and line (or entry)."""

from __future__ import annotations

import importlib.resources
import json
import math
from pathlib import Path
from typing import Any

from specwise.errors import SpecwiseError
from specwise.mapper.records import WorkItem
from specwise.prompts import Request, jsonl_objects, read_text, request_from_fields

SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}
"""ShareGPT's ``from`` values and the chat roles they become."""


def load_workload(path: str | Path) -> list[WorkItem]:
    """A ``.json`` file is read as ShareGPT conversations, anything else as JSONL."""
    path = Path(path)
    items = _load_sharegpt(path) if path.suffix.lower() == ".json" else _load_jsonl(path)
    if not items:
        raise SpecwiseError(f"{path} holds no requests")
    return items


def builtin_workload() -> list[WorkItem]:
    """The workload that ships with specwise (``benchmarks/make_workload.py`` writes it),
    so a map needs no file of the user's to start from."""
    resource = importlib.resources.files("specwise") / "data" / "workload.jsonl"
    with importlib.resources.as_file(resource) as path:
        return load_workload(path)


def _load_jsonl(path: Path) -> list[WorkItem]:
    items = []
    for number, obj in jsonl_objects(path, "workload"):
        where = f"{path}:{number}"
        items.append(_item(request_from_fields(obj, number, where), obj, where))
    return items


def _load_sharegpt(path: Path) -> list[WorkItem]:
    text = read_text(path, "workload")
    if not text.strip():
        raise SpecwiseError(f"{path} holds no requests")
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecwiseError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(entries, list):
        raise SpecwiseError(f"{path}: expected a JSON list of ShareGPT conversations (a .jsonl file holds one request a line)")
    items = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: entry {number}"
        if not isinstance(entry, dict):
            raise SpecwiseError(f"{where}: expected a JSON object")
        fields = {"id": entry.get("id", number), "messages": _opening(entry.get("conversations"), where)}
        if "segment" in entry:
            fields["segment"] = entry["segment"]
        items.append(_item(request_from_fields(fields, number, where), entry, where))
    return items


def _opening(conversations: Any, where: str) -> list[dict[str, str]]:
    """The messages up to and including the first human turn: what a client sends first."""
    if not isinstance(conversations, list):
        raise SpecwiseError(f"{where}: conversations must be a list of {{from, value}} objects")
    messages = []
    for turn in conversations:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise SpecwiseError(f"{where}: conversations must be a list of {{from, value}} objects")
        role = SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise SpecwiseError(f"{where}: a turn's from is {turn.get('from')!r}, not one of {', '.join(SHAREGPT_ROLES)}")
        messages.append({"role": role, "content": turn["value"]})
        if role == "user":
            return messages
    raise SpecwiseError(f"{where}: the conversation has no human turn")


def _item(request: Request, fields: dict[str, Any], where: str) -> WorkItem:
    """A request with the replay's own fields of its line, checked."""
    max_tokens = fields.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise SpecwiseError(f"{where}: max_tokens must be an integer >= 1, got {max_tokens!r}")
    arrival_s = fields.get("arrival_s")
    if arrival_s is not None and (
        not isinstance(arrival_s, (int, float)) or isinstance(arrival_s, bool) or not math.isfinite(arrival_s) or arrival_s < 0
    ):
        raise SpecwiseError(f"{where}: arrival_s must be a number of seconds >= 0, got {arrival_s!r}")
    return WorkItem(request=request, max_tokens=max_tokens, arrival_s=None if arrival_s is None else float(arrival_s))
