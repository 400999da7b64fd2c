"""How users state constraints: the OpenAI fields, vLLM's extras and aliases, the
files of the CLI; bad ones are one-line errors before anything runs."""

from __future__ import annotations

import pytest

from specwise.errors import SpecwiseError
from specwise.server.protocol import APIError, ChatCompletionRequest
from specwise.structured.constraint import Constraint, compile_grammar, constraint_from_fields

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}}, Constraint.json_schema(SCHEMA)),
        ({"response_format": {"type": "json_object"}}, Constraint.json_object()),
        ({"response_format": {"type": "text"}}, None),
        ({"structured_outputs": {"regex": "[0-9]+"}}, Constraint.regex("[0-9]+")),
        ({"structured_outputs": {"choice": ["a", "b"]}}, Constraint.choice(["a", "b"])),
        ({"structured_outputs": {"json": SCHEMA}}, Constraint.json_schema(SCHEMA)),
        ({"structured_outputs": {"grammar": 'start: "x"'}}, Constraint.grammar('start: "x"')),
        ({"guided_json": SCHEMA}, Constraint.json_schema(SCHEMA)),
        ({"guided_json": '{"type": "object", "properties": {"a": {"type": "integer"}}}'}, Constraint.json_schema(SCHEMA)),
        ({"guided_regex": "[0-9]+"}, Constraint.regex("[0-9]+")),
        ({"guided_grammar": 'start: "x"'}, Constraint.grammar('start: "x"')),
        ({"guided_choice": ["a", "b"]}, Constraint.choice(["a", "b"])),
        ({}, None),
    ],
)
def test_openai_and_vllm_fields_give_the_same_constraints(fields, expected):
    assert constraint_from_fields(fields) == expected


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"response_format": {"type": "xml"}}, "response_format type 'xml'"),
        ({"response_format": {"type": "json_schema"}}, "must be an object with a schema"),
        ({"response_format": "json"}, "must be an object with a type"),
        ({"structured_outputs": {"regex": ""}}, "structured_outputs.regex"),
        ({"structured_outputs": {"yaml": "x"}}, "unknown constraint"),
        ({"guided_choice": []}, "non-empty list"),
        ({"guided_json": "{nope"}, "not valid JSON"),
        ({"guided_regex": "a", "guided_choice": ["b"]}, "give one constraint, got 2"),
    ],
)
def test_bad_fields_are_one_line_errors(fields, fragment):
    with pytest.raises(SpecwiseError, match=None) as info:
        constraint_from_fields(fields, "p.jsonl:3")
    message = str(info.value)
    assert fragment in message and message.startswith("p.jsonl:3: ") and "\n" not in message


@pytest.mark.parametrize(
    "constraint, fragment",
    [
        (Constraint.regex("a(b"), "unclosed group"),
        (Constraint.regex("[z-a]"), "invalid regex"),
        (Constraint.grammar("start: missing"), 'unknown name: "missing"'),
        (Constraint.json_schema({"type": "object", "not": {"required": ["a"]}}), 'Unimplemented keys: ["not"]'),
        (Constraint.json_schema({"type": "nonsense"}), "nonsense"),
    ],
)
def test_llguidance_refusals_become_one_line_errors(constraint, fragment):
    with pytest.raises(SpecwiseError) as info:
        compile_grammar(constraint)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_the_server_body_turns_a_bad_constraint_into_a_400_naming_the_field():
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], guided_regex="a(b")
    with pytest.raises(APIError) as info:
        body.constraint()
    assert info.value.status == 400 and info.value.param == "guided_regex" and "unclosed group" in info.value.message
    ok = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"})
    assert ok.constraint() == Constraint.json_object()
