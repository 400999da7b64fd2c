"""load_workload and builtin_workload: the formats a map replays, the built-in set,
and the one-line errors a bad file gives."""

from __future__ import annotations

import importlib.util
import json
import platform
from collections import Counter
from pathlib import Path

import pytest

from specwise.errors import SpecwiseError
from specwise.mapper.workload import builtin_workload, load_workload
from specwise.structured.constraint import compile_grammar

SEGMENTS = {"summarise", "code-edit", "context-qa", "writing", "json-extract"}
GENERATOR = Path(__file__).resolve().parents[1] / "benchmarks" / "make_workload.py"


def _jsonl(tmp_path, lines, name="work.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def _sharegpt(tmp_path, entries, name="work.json"):
    path = tmp_path / name
    path.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return path


def _error(path) -> str:
    with pytest.raises(SpecwiseError) as info:
        load_workload(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# The built-in workload.


def test_builtin_workload_has_six_requests_in_each_of_five_segments():
    items = builtin_workload()
    assert len(items) == 30
    assert Counter(item.segment for item in items) == {segment: 6 for segment in SEGMENTS}
    assert len({item.request.id for item in items}) == 30
    assert {item.segment for item in items[:5]} == SEGMENTS  # interleaved: any prefix is mixed


def test_builtin_prompts_are_short_single_user_messages_with_budgets():
    items = builtin_workload()
    for item in items:
        assert item.request.prompt is not None and item.request.messages is None and item.request.turns is None
        assert len(item.request.prompt) < 1500, item.request.id
        assert item.max_tokens is not None and 48 <= item.max_tokens <= 96
        assert item.arrival_s is None
    assert 60 <= sum(item.max_tokens for item in items) / len(items) <= 68


def test_builtin_json_extract_constraints_compile_and_others_have_none():
    for item in builtin_workload():
        constraint = item.request.constraint
        if item.segment == "json-extract":
            assert constraint is not None and constraint.kind == "json_schema"
            assert compile_grammar(constraint)
        else:
            assert constraint is None


@pytest.mark.skipif(
    platform.python_implementation() != "CPython" or platform.python_version() != "3.11.7",
    reason="the committed workload is the generator's output under CPython 3.11.7 only",
)
def test_builtin_workload_is_what_the_generator_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_workload", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.PYTHON == platform.python_version()
    generator.main(["--output", str(tmp_path / "workload.jsonl")])
    assert (tmp_path / "workload.jsonl").read_bytes() == generator.OUTPUT.read_bytes()


# JSONL.


def test_jsonl_reads_the_prompt_format_with_max_tokens_and_arrival_s(tmp_path):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False}
    path = _jsonl(
        tmp_path,
        [
            {"id": "a", "prompt": "Hello", "segment": "chat", "max_tokens": 32, "arrival_s": 0},
            {"messages": [{"role": "user", "content": "Hi"}], "arrival_s": 1.5},
            "",
            {
                "id": 9,
                "turns": ["one", "two"],
                "category": "multi",
                "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
            },
        ],
    )
    first, second, third = load_workload(path)
    assert (first.request.id, first.request.prompt, first.segment, first.max_tokens, first.arrival_s) == (
        "a",
        "Hello",
        "chat",
        32,
        0.0,
    )
    assert isinstance(first.arrival_s, float)
    assert (second.request.id, second.max_tokens, second.arrival_s, second.segment) == ("2", None, 1.5, "default")
    assert second.request.messages == [{"role": "user", "content": "Hi"}]
    assert (third.request.id, third.request.turns, third.segment) == ("9", ["one", "two"], "multi")
    assert third.request.constraint is not None and third.request.constraint.kind == "json_schema"


def test_any_suffix_but_json_is_read_as_jsonl(tmp_path):
    (item,) = load_workload(_jsonl(tmp_path, [{"prompt": "x"}], name="work.txt"))
    assert item.request.prompt == "x"


# ShareGPT.


def test_sharegpt_sends_the_opening_up_to_the_first_human_turn(tmp_path):
    path = _sharegpt(
        tmp_path,
        [
            {
                "id": "conv-a",
                "segment": "chat",
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "What is a heap?"},
                    {"from": "gpt", "value": "A tree-shaped priority queue."},
                    {"from": "human", "value": "And a stack?"},
                ],
            },
            {"conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi!"}], "max_tokens": 16},
        ],
    )
    first, second = load_workload(path)
    assert first.request.id == "conv-a" and first.segment == "chat"
    assert first.request.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a heap?"}]
    assert first.request.prompt is None and first.max_tokens is None
    assert second.request.id == "2" and second.segment == "default" and second.max_tokens == 16
    assert second.request.messages == [{"role": "user", "content": "Hello"}]


# Bad input: one line, naming the file and the line (or entry).


@pytest.mark.parametrize("name", ["nope.jsonl", "nope.json"])
def test_missing_file(tmp_path, name):
    message = _error(tmp_path / name)
    assert "cannot read workload file" in message and name in message


def test_jsonl_line_that_is_not_json(tmp_path):
    path = _jsonl(tmp_path, [{"prompt": "fine"}, '{"prompt": "broken"'])
    message = _error(path)
    assert f"{path}:2" in message and "not valid JSON" in message


def test_sharegpt_file_that_is_not_json_names_the_line(tmp_path):
    path = tmp_path / "work.json"
    path.write_text('[\n {"conversations": []},\n {"conversations": [}\n]\n', encoding="utf-8")
    message = _error(path)
    assert f"{path}:3" in message and "not valid JSON" in message


@pytest.mark.parametrize("value", ["8", 0, -3, 1.5, True])
def test_bad_max_tokens(tmp_path, value):
    path = _jsonl(tmp_path, [{"prompt": "ok"}, {"prompt": "x", "max_tokens": value}])
    message = _error(path)
    assert f"{path}:2" in message and "max_tokens" in message


@pytest.mark.parametrize("value", ["1", -0.5, False, float("nan"), float("inf")])
def test_bad_arrival_s(tmp_path, value):
    path = _jsonl(tmp_path, [{"prompt": "ok"}, {"prompt": "x", "arrival_s": value}])
    message = _error(path)
    assert f"{path}:2" in message and "arrival_s" in message


def test_bad_max_tokens_in_sharegpt_names_the_entry(tmp_path):
    path = _sharegpt(tmp_path, [{"conversations": [{"from": "human", "value": "x"}], "max_tokens": "many"}])
    message = _error(path)
    assert f"{path}: entry 1" in message and "max_tokens" in message


def test_jsonl_request_errors_name_the_line(tmp_path):
    path = _jsonl(tmp_path, [{"prompt": "ok"}, {"text": "wrong key"}])
    message = _error(path)
    assert f"{path}:2" in message and "exactly one of prompt, messages, turns" in message


@pytest.mark.parametrize(
    "name, text", [("work.jsonl", ""), ("work.jsonl", "\n  \n"), ("work.json", ""), ("work.json", "\n"), ("work.json", "[]")]
)
def test_empty_files(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert "holds no requests" in _error(path)


def test_sharegpt_entry_without_a_human_turn(tmp_path):
    path = _sharegpt(
        tmp_path,
        [
            {"conversations": [{"from": "human", "value": "fine"}]},
            {"id": "x", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "gpt", "value": "Hello"}]},
        ],
    )
    message = _error(path)
    assert f"{path}: entry 2" in message and "no human turn" in message


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"conversations": []}, "no human turn"),
        ({"id": "y"}, "conversations must be a list"),
        ({"conversations": "hello"}, "conversations must be a list"),
        ({"conversations": [{"from": "human"}]}, "conversations must be a list"),
        ({"conversations": [{"from": "bard", "value": "hi"}]}, "'bard'"),
        ("not an object", "expected a JSON object"),
    ],
)
def test_bad_sharegpt_entries(tmp_path, entry, words):
    path = _sharegpt(tmp_path, [entry])
    message = _error(path)
    assert f"{path}: entry 1" in message and words in message


def test_sharegpt_file_that_is_not_a_list(tmp_path):
    path = _sharegpt(tmp_path, {"conversations": []})
    assert "expected a JSON list" in _error(path)
