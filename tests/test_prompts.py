"""load_prompts: the JSONL formats it reads and the errors it gives."""

from __future__ import annotations

import json

import pytest

from specwise.errors import SpecwiseError
from specwise.prompts import Request, load_prompts


def _write(tmp_path, lines, name="prompts.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def test_prompt_format(tmp_path):
    path = _write(tmp_path, [{"id": "a", "prompt": "Hello"}, {"id": 7, "prompt": "Bye", "segment": "chat"}])
    reqs = load_prompts(path)
    assert [r.id for r in reqs] == ["a", "7"]  # ids become strings
    assert [r.prompt for r in reqs] == ["Hello", "Bye"]
    assert reqs[0].messages is None and reqs[0].turns is None
    assert [r.segment for r in reqs] == [None, "chat"]


def test_messages_format(tmp_path):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    (req,) = load_prompts(_write(tmp_path, [{"id": "m", "messages": msgs}]))
    assert req.messages == msgs
    assert req.prompt is None and req.turns is None


def test_turns_format(tmp_path):
    (req,) = load_prompts(_write(tmp_path, [{"id": "t", "turns": ["first", "second"]}]))
    assert req.turns == ["first", "second"]
    assert req.prompt is None and req.messages is None


def test_spec_bench_format(tmp_path):
    lines = [
        {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Now shorter."]},
        {"question_id": 82, "category": "math", "turns": ["2+2?"]},
    ]
    reqs = load_prompts(_write(tmp_path, lines))
    assert [r.id for r in reqs] == ["81", "82"]
    assert [r.segment for r in reqs] == ["writing", "math"]
    assert reqs[0].turns == ["Write a poem.", "Now shorter."]


def test_id_defaults_to_line_number_and_blank_lines_are_skipped(tmp_path):
    path = _write(tmp_path, [{"prompt": "one"}, "", "   ", {"prompt": "four"}])
    reqs = load_prompts(path)
    assert [r.id for r in reqs] == ["1", "4"]


def test_segment_wins_over_category(tmp_path):
    (req,) = load_prompts(_write(tmp_path, [{"prompt": "x", "segment": "s", "category": "c"}]))
    assert req.segment == "s"


def test_malformed_json_names_the_line(tmp_path):
    path = _write(tmp_path, [{"prompt": "fine"}, '{"prompt": "broken"', {"prompt": "also fine"}])
    with pytest.raises(SpecwiseError) as info:
        load_prompts(path)
    assert f"{path}:2" in str(info.value)
    assert "JSON" in str(info.value)


def test_non_object_line_errors(tmp_path):
    path = _write(tmp_path, [["a", "list"]])
    with pytest.raises(SpecwiseError, match=":1"):
        load_prompts(path)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_errors(tmp_path, prompt):
    path = _write(tmp_path, [{"prompt": "ok"}, {"id": "e", "prompt": prompt}])
    with pytest.raises(SpecwiseError) as info:
        load_prompts(path)
    assert ":2" in str(info.value)
    assert "prompt" in str(info.value)


def test_line_without_prompt_messages_or_turns_errors(tmp_path):
    path = _write(tmp_path, [{"id": "x", "text": "wrong key"}])
    with pytest.raises(SpecwiseError) as info:
        load_prompts(path)
    assert ":1" in str(info.value)
    assert "exactly one of prompt, messages, turns" in str(info.value)


def test_line_with_two_of_prompt_messages_turns_errors(tmp_path):
    path = _write(tmp_path, [{"prompt": "a", "turns": ["b"]}])
    with pytest.raises(SpecwiseError, match="exactly one"):
        load_prompts(path)


@pytest.mark.parametrize(
    "line",
    [
        {"turns": []},
        {"turns": ["ok", ""]},
        {"turns": ["ok", 3]},
        {"messages": []},
        {"messages": [{"role": "user"}]},
        {"messages": [{"content": "no role"}]},
        {"messages": ["not a dict"]},
        {"prompt": 42},
    ],
)
def test_bad_turns_or_messages_error(tmp_path, line):
    with pytest.raises(SpecwiseError, match=":1"):
        load_prompts(_write(tmp_path, [line]))


def test_turns_given_as_a_string_errors(tmp_path):
    with pytest.raises(SpecwiseError):
        load_prompts(_write(tmp_path, [{"turns": "hello"}]))


def test_empty_file_errors(tmp_path):
    path = _write(tmp_path, ["", ""])
    with pytest.raises(SpecwiseError, match="no prompts"):
        load_prompts(path)


def test_missing_file_errors(tmp_path):
    with pytest.raises(SpecwiseError, match="cannot read"):
        load_prompts(tmp_path / "nope.jsonl")


def test_request_requires_exactly_one_field():
    with pytest.raises(SpecwiseError):
        Request(id="r")
    with pytest.raises(SpecwiseError):
        Request(id="r", prompt="a", messages=[{"role": "user", "content": "b"}])
