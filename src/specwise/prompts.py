"""Requests and the JSONL prompt files they are read from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SpecwiseError(f"cannot read prompts file {path}: {exc.strerror}") from exc
    requests = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecwiseError(f"{where}: not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise SpecwiseError(f"{where}: expected a JSON object")
        rid = obj.get("id", obj.get("question_id", obj.get("task_id", number)))
        try:
            requests.append(
                Request(
                    id=str(rid),
                    prompt=obj.get("prompt"),
                    messages=obj.get("messages"),
                    turns=obj.get("turns"),
                    segment=obj.get("segment", obj.get("category")),
                    constraint=_checked(constraint_from_fields(obj)),
                )
            )
        except SpecwiseError as exc:
            raise SpecwiseError(f"{where}: {exc}") from exc
    if not requests:
        raise SpecwiseError(f"{path} holds no prompts")
    return requests


def _checked(constraint: Constraint | None) -> Constraint | None:
    if constraint is not None:
        compile_grammar(constraint)
    return constraint
