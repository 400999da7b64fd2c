"""Requests and the JSONL prompt files they are read from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specwise.errors import SpecwiseError
from specwise.structured.constraint import Constraint, compile_grammar, constraint_from_fields


@dataclass(slots=True)
class Request:
    """One conversation to complete. Exactly one of prompt, messages, turns is set."""

    id: str
    prompt: str | None = None
    """Text; wrapped as a user message when the chat template is used."""
    messages: list[dict[str, str]] | None = None
    """Chat messages ending with the user's turn."""
    turns: list[str] | None = None
    """User turns answered in order, each after the model's answer to the previous one."""
    segment: str | None = None
    """Traffic segment label for per-segment statistics."""
    constraint: Constraint | None = None
    """What this request's output must match (overrides the run's own)."""

    def __post_init__(self) -> None:
        given = [x for x in (self.prompt, self.messages, self.turns) if x is not None]
        if len(given) != 1:
            raise SpecwiseError(f"request {self.id!r}: give exactly one of prompt, messages, turns")
        if self.prompt is not None and not (isinstance(self.prompt, str) and self.prompt.strip()):
            raise SpecwiseError(f"request {self.id!r}: prompt must be a non-empty string")
        if self.turns is not None and (not isinstance(self.turns, list) or not self.turns or not all(isinstance(t, str) and t.strip() for t in self.turns)):
            raise SpecwiseError(f"request {self.id!r}: turns must be non-empty strings")
        if self.messages is not None and not (
            self.messages and all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in self.messages)
        ):
            raise SpecwiseError(f"request {self.id!r}: messages must be a non-empty list of {{role, content}} objects")


def load_prompts(path: str | Path) -> list[Request]:
    """One JSON object a line: ``id`` and one of ``prompt``, ``messages``, ``turns``
    (Spec-Bench); optional ``segment`` (or Spec-Bench's ``category``) and a constraint
    as the OpenAI API gives one (``response_format``, or ``structured_outputs``)."""
    path = Path(path)
    requests = [request_from_fields(obj, number, f"{path}:{number}") for number, obj in jsonl_objects(path, "prompts")]
    if not requests:
        raise SpecwiseError(f"{path} holds no prompts")
    return requests


def jsonl_objects(path: Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line of a JSONL file as (line number, object), so every reader of
    the prompt format names the same file and line when one is bad. ``what`` names the
    file in the error a missing one gives (``cannot read prompts file ...``)."""
    for number, line in enumerate(read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecwiseError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise SpecwiseError(f"{path}:{number}: expected a JSON object")
        yield number, obj


def read_text(path: Path, what: str) -> str:
    """A file's text, or the one-line error a missing or binary file deserves."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecwiseError(f"cannot read {what} file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SpecwiseError(f"cannot read {what} file {path}: not UTF-8 text") from exc


def request_from_fields(obj: dict[str, Any], default_id: int | str, where: str) -> Request:
    """The Request one line of the prompt format describes, shared by every file format
    built on it. ``default_id`` is used when the line has no id; ``where`` (a file and
    line) prefixes any error."""
    rid = obj.get("id", obj.get("question_id", obj.get("task_id", default_id)))
    try:
        return Request(
            id=str(rid),
            prompt=obj.get("prompt"),
            messages=obj.get("messages"),
            turns=obj.get("turns"),
            segment=obj.get("segment", obj.get("category")),
            constraint=_checked(constraint_from_fields(obj)),
        )
    except SpecwiseError as exc:
        raise SpecwiseError(f"{where}: {exc}") from exc


def _checked(constraint: Constraint | None) -> Constraint | None:
    if constraint is not None:
        compile_grammar(constraint)
    return constraint
