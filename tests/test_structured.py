"""Structured output on the real model: over the JSONSchemaBench dev schemas,
constrained speculation (grammar + ngram, grammar + EAGLE) is token-identical to
constrained plain decoding, every finished output validates, and constrained and
unconstrained requests batched together each equal their solo output."""

from __future__ import annotations

import json
import re
import string

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specwise import SpeculativeConfig
from specwise.errors import SpecwiseError
from specwise.prompts import Request
from specwise.sampling import SamplingParams
from specwise.structured.constraint import Constraint, compile_grammar
from tests.conftest import read_jsonl

pytestmark = pytest.mark.slow

PER_GROUP = 26
MAX_TOKENS = 80
NGRAM = SpeculativeConfig("ngram", 4)
EAGLE = SpeculativeConfig("eagle", 4)


def schema_prompt(schema: dict) -> str:
    """Ask for the fields by name: shown the schema itself, the small model copies it."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        return "Reply with one short JSON value that fits this schema:\n" + json.dumps(schema)[:500]
    lines = []
    for key, sub in list(props.items())[:12]:
        sub = sub if isinstance(sub, dict) else {}
        kind, about = sub.get("type"), sub.get("description")
        lines.append(f"- {key}" + (f" ({kind})" if isinstance(kind, str) else "") + (f": {about[:80]}" if isinstance(about, str) else ""))
    return "Reply with one short JSON object, on one line, with these fields:\n" + "\n".join(lines)


def closed(schema):
    """Objects that list their properties admit no others (as OpenAI's strict mode asks);
    left open, the small model invents keys until it runs out of tokens. Every output
    of the closed schema is an output of the original, and is validated against that."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


def compiled_schemas() -> list[dict]:
    """The first PER_GROUP schemas of each group that llguidance compiles, closed (104 in all)."""
    chosen: dict[str, list[dict]] = {}
    for row in read_jsonl("schemas_dev.jsonl"):
        group = chosen.setdefault(row["group"], [])
        if len(group) < PER_GROUP:
            try:
                compile_grammar(Constraint.json_schema(closed(row["schema"])))
            except SpecwiseError:
                continue
            group.append(row)
    return [row for rows in chosen.values() for row in rows]


@pytest.fixture(scope="module")
def schemas():
    rows = compiled_schemas()
    assert len(rows) >= 100
    return rows


def run(llm, rows, spec, concurrency=8):
    requests = [Request(id=r["id"], prompt=schema_prompt(r["schema"])) for r in rows]
    params = [SamplingParams(max_tokens=MAX_TOKENS, constraint=Constraint.json_schema(closed(r["schema"]))) for r in rows]
    llm.reset_prefix_cache()
    return llm.generate(requests, params, spec, concurrency=concurrency)


@pytest.fixture(scope="module")
def plain(llm, schemas):
    return run(llm, schemas, None)


def test_every_finished_output_validates_against_its_schema(schemas, plain):
    finished = [(row, res) for row, res in zip(schemas, plain) if res.finish_reason == "stop"]
    assert len(finished) >= len(schemas) // 2, f"only {len(finished)} of {len(schemas)} finished within {MAX_TOKENS} tokens"
    for row, res in finished:
        jsonschema.validate(json.loads(res.text), row["schema"])


@pytest.mark.parametrize("spec", [NGRAM, EAGLE], ids=["grammar+ngram", "grammar+eagle"])
def test_constrained_speculation_is_token_identical_to_constrained_plain(llm, schemas, plain, spec):
    fast = run(llm, schemas, spec)
    for row, p, f in zip(schemas, plain, fast):
        assert f.token_ids == p.token_ids, row["id"]
        assert f.finish_reason == p.finish_reason, row["id"]
    assert sum(f.stats.forced_tokens for f in fast) > 0


def test_mixed_batch_of_constrained_and_unconstrained_each_equals_its_solo_output(llm, schemas):
    """Concurrency 8: schema requests, a regex, a choice and free text share each step."""
    rows = schemas[::13][:5]
    requests = [Request(id=r["id"], prompt=schema_prompt(r["schema"])) for r in rows]
    params = [SamplingParams(max_tokens=40, constraint=Constraint.json_schema(closed(r["schema"]))) for r in rows]
    requests += [Request(id="date", prompt="When was Python 3.0 released? Answer as YYYY-MM-DD."), Request(id="yn", prompt="Is the sky blue?")]
    params += [SamplingParams(max_tokens=16, constraint=Constraint.regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")),
               SamplingParams(max_tokens=8, constraint=Constraint.choice(["yes", "no"]))]  # fmt: skip
    requests += [Request(id=f"free{i}", prompt=p) for i, p in enumerate(["Write a haiku about the sea.", "List three prime numbers."])]
    params += [SamplingParams(max_tokens=40)] * 2
    assert len(requests) > 8  # more requests than slots: some join mid-batch
    solo = [llm.generate([r], p, NGRAM)[0] for r, p in zip(requests, params)]
    llm.reset_prefix_cache()
    together = llm.generate(requests, params, NGRAM, concurrency=8)
    for s, t in zip(solo, together):
        assert t.token_ids == s.token_ids, s.id
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", together[5].text)
    assert together[6].text in ("yes", "no")


# --------------------------------------------------------------- properties

atoms = st.sampled_from(["a", "b", "x", "0", "[a-c]", "[0-9]", "(ab|ba)", "-", "[xyz]"])
quantifiers = st.sampled_from(["", "?", "{1,3}", "{2}", "+"])
small_regex = st.lists(st.tuples(atoms, quantifiers).map("".join), min_size=1, max_size=4).map("".join)

leaf = st.sampled_from([{"type": "string", "maxLength": 8}, {"type": "integer"}, {"type": "boolean"}, {"enum": ["red", "green", 3]},
                        {"type": "number"}, {"type": "array", "items": {"type": "integer"}, "maxItems": 3}])  # fmt: skip
keys = st.text(string.ascii_lowercase, min_size=1, max_size=6)


@st.composite
def small_schema(draw):
    props = draw(st.dictionaries(keys, leaf, min_size=1, max_size=4))
    required = draw(st.lists(st.sampled_from(sorted(props)), unique=True))
    return {"type": "object", "properties": props, "required": required, "additionalProperties": draw(st.booleans())}


PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _same_and_valid(llm, prompt: str, constraint: Constraint, max_tokens: int):
    params = SamplingParams(max_tokens=max_tokens, constraint=constraint)
    plain = llm.generate([prompt], params)[0]
    fast = llm.generate([prompt], params, SpeculativeConfig("ngram", 4))[0]
    assert fast.token_ids == plain.token_ids
    return plain


@PROPERTY
@given(pattern=small_regex)
def test_property_small_regexes(llm, pattern):
    res = _same_and_valid(llm, f"Write a string that matches the regular expression {pattern}", Constraint.regex(pattern), 16)
    if res.finish_reason == "stop":
        assert re.fullmatch(pattern, res.text), (pattern, res.text)


@PROPERTY
@given(schema=small_schema())
def test_property_small_schemas(llm, schema):
    res = _same_and_valid(llm, schema_prompt(schema), Constraint.json_schema(schema), 48)
    if res.finish_reason == "stop":
        jsonschema.validate(json.loads(res.text), schema)
