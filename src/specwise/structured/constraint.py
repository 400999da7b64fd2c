"""What a request's output must match, and how users say it.

A constraint is plain data (hashable, so it can sit in frozen sampling
parameters and key a compile cache): its kind and its text. It is turned
into an llguidance grammar once, where it is also checked, so a bad schema,
regex or grammar is a one-line error before any decoding starts.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import llguidance

from specwise.errors import SpecwiseError

Kind = Literal["json_schema", "json_object", "regex", "grammar", "choice"]
KINDS: tuple[Kind, ...] = ("json_schema", "json_object", "regex", "grammar", "choice")

JSON_OPTIONS = {"whitespace_flexible": False}
"""Compact JSON: no free whitespace between tokens, so keys and punctuation are forced
(free drafts) and a small model cannot wander into endless blank lines. A schema's own
``x-guidance`` options override this."""


@dataclass(frozen=True, slots=True)
class Constraint:
    kind: Kind
    text: str
    """json_schema: the schema as JSON text; regex: the pattern; grammar: Lark text;
    choice: a JSON list of strings; json_object: empty."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecwiseError(f"unknown constraint kind {self.kind!r} (choose from {', '.join(KINDS)})")

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str) -> Constraint:
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise SpecwiseError(f"JSON schema is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(schema, (dict, bool)):
            raise SpecwiseError(f"a JSON schema must be an object, got {type(schema).__name__}")
        return cls("json_schema", json.dumps(schema))

    @classmethod
    def json_object(cls) -> Constraint:
        return cls("json_object", "")

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        if not isinstance(pattern, str) or not pattern:
            raise SpecwiseError("a regex constraint needs a non-empty pattern")
        return cls("regex", pattern)

    @classmethod
    def grammar(cls, lark: str) -> Constraint:
        if not isinstance(lark, str) or not lark.strip():
            raise SpecwiseError("a grammar constraint needs non-empty Lark text")
        return cls("grammar", lark)

    @classmethod
    def choice(cls, options: list[str] | tuple[str, ...]) -> Constraint:
        if not isinstance(options, (list, tuple)) or not options or not all(isinstance(o, str) and o for o in options):
            raise SpecwiseError("a choice constraint needs a non-empty list of non-empty strings")
        return cls("choice", json.dumps(list(options)))

    def describe(self) -> str:
        return self.kind.replace("_", " ")


@functools.lru_cache(maxsize=256)
def compile_grammar(constraint: Constraint) -> str:
    """The llguidance grammar of a constraint, checked (raises SpecwiseError, one line).

    Checking needs no tokenizer, so the CLI refuses a bad constraint before the model loads."""
    try:
        grammar = _grammar_text(constraint)
    except ValueError as exc:
        raise SpecwiseError(f"invalid {constraint.describe()}: {_one_line(str(exc))}") from None
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, None)
    if is_error:
        raise SpecwiseError(f"invalid {constraint.describe()}: {_one_line(messages[0])}")
    return grammar


def _grammar_text(c: Constraint) -> str:
    m = llguidance.LLMatcher
    if c.kind == "json_schema":
        return m.grammar_from_json_schema(c.text, defaults=JSON_OPTIONS)  # type: ignore[arg-type]
    if c.kind == "json_object":
        return m.grammar_from_json_schema('{"type": "object"}', defaults=JSON_OPTIONS)  # type: ignore[arg-type]
    if c.kind == "regex":
        return m.grammar_from_regex(c.text)
    if c.kind == "grammar":
        return m.grammar_from_lark(c.text)
    return m.grammar_from_lark("start: " + " | ".join(json.dumps(o) for o in json.loads(c.text)))


def _one_line(message: str) -> str:
    """llguidance's messages carry a source excerpt over several lines; the first says it."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "rejected by llguidance"
    detail = next((line for line in lines[1:] if line.startswith("error:")), None)  # the regex parser's reason
    return f"{lines[0].rstrip(':')}: {detail.removeprefix('error:').strip()}" if detail else lines[0]


def constraint_from_fields(body: dict[str, Any], where: str = "") -> Constraint | None:
    """A constraint from the fields of an OpenAI-style request (a server body or a prompt
    line): ``response_format`` (``json_schema``, ``json_object``, ``text``), the extras
    ``structured_outputs: {json | regex | grammar | choice}`` and vLLM's older
    ``guided_json`` / ``guided_regex`` / ``guided_grammar`` / ``guided_choice``.
    More than one is an error: which should win would be a guess. ``where`` prefixes
    error messages (a file and line)."""
    where = f"{where}: " if where else ""
    found: list[Constraint] = []
    fmt = body.get("response_format")
    if fmt is not None:
        found += _from_response_format(fmt, where)
    outputs = body.get("structured_outputs")
    if outputs is not None:
        if not isinstance(outputs, dict):
            raise SpecwiseError(f"{where}structured_outputs must be an object")
        found += [_from_named(k, v, f"{where}structured_outputs.{k}") for k, v in outputs.items() if v is not None]
    for key in ("json", "regex", "grammar", "choice"):
        value = body.get(f"guided_{key}")
        if value is not None:
            found.append(_from_named(key, value, f"{where}guided_{key}"))
    if len(found) > 1:
        raise SpecwiseError(f"{where}give one constraint, got {len(found)} ({', '.join(c.describe() for c in found)})")
    return found[0] if found else None


def _from_response_format(fmt: Any, where: str) -> list[Constraint]:
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise SpecwiseError(f"{where}response_format must be an object with a type")
    kind = fmt["type"]
    if kind == "text":
        return []
    if kind == "json_object":
        return [Constraint.json_object()]
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise SpecwiseError(f"{where}response_format.json_schema must be an object with a schema")
        return [Constraint.json_schema(spec["schema"])]
    raise SpecwiseError(f"{where}response_format type {kind!r} is not one of text, json_object, json_schema")


def _from_named(key: str, value: Any, where: str) -> Constraint:
    try:
        if key == "json":
            return Constraint.json_schema(value)
        if key == "regex":
            return Constraint.regex(value)
        if key == "grammar":
            return Constraint.grammar(value)
        if key == "choice":
            return Constraint.choice(value)
    except SpecwiseError as exc:
        raise SpecwiseError(f"{where}: {exc}") from None
    raise SpecwiseError(f"{where}: unknown constraint (choose from json, regex, grammar, choice)")


def constraint_from_file(kind: Kind, path: Path) -> Constraint:
    """--json-schema FILE, --grammar FILE.lark."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecwiseError(f"cannot read {path}: {exc.strerror}") from None
    return Constraint.json_schema(text) if kind == "json_schema" else Constraint.grammar(text)
