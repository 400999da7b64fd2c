"""The grammar as a transaction inside the engine step, on a tiny tokenizer and
scripted models (no real model): masks, cut drafts, lossless greedy and sampled
verification under a constraint, forced tokens, the reasoning boundary."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from specwise.drafters.base import Draft
from specwise.drafters.fallback import FallbackDrafter
from specwise.drafters.grammar import GrammarDrafter
from specwise.drafters.ngram import NgramDrafter
from specwise.sampling import SamplingParams
from specwise.structured.constraint import Constraint
from specwise.structured.grammar import MaskRequest, row_masks
from tests.structured_util import EOS, ScriptDrafter, TableModel, World, tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def bigram(tokenizer, seed: int = 0, scale: float = 3.0) -> TableModel:
    v = tokenizer.vocab_size
    return TableModel(torch.randn(v, v, generator=torch.Generator().manual_seed(seed)) * scale)


def allowed_by_walking(state, drafts: list[int]) -> list[np.ndarray]:
    """Masks computed one row at a time, consuming and rolling back by hand."""
    out = []
    for i in range(len(drafts) + 1):
        bits = np.unpackbits(np.frombuffer(state.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        out.append(bits[: state.compiler.vocab_size].astype(bool))
        if i < len(drafts):
            assert state.matcher.consume_token(drafts[i])
    state.matcher.rollback(len(drafts))
    return out


CONSTRAINTS = [
    Constraint.regex(r"(abc|abd)+ [0-9]{2,4}"),
    Constraint.choice(["yes", "no", "maybe"]),
    Constraint.json_schema({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}),
    Constraint.grammar('start: "let " WORD " be " NUM\nWORD: /[a-z]+/\nNUM: /[0-9]+/'),
]


@pytest.mark.parametrize("constraint", CONSTRAINTS, ids=lambda c: c.kind)
def test_row_masks_equal_walking_the_matcher_and_leave_it_unchanged(tokenizer, constraint):
    world = World(tokenizer, bigram(tokenizer))
    state = world.grammars.state(constraint)
    text = {"regex": "abcabd 123", "choice": "maybe", "json_schema": '{"name":"Ada","age":36}', "grammar": "let x be 7"}[constraint.kind]
    drafts = tokenizer.encode(text)
    assert state.allowed(drafts) == len(drafts)
    other = world.grammars.state(constraint)
    (masks,) = row_masks([MaskRequest(state, drafts[:3])], world.model.config.vocab_size)
    single, none = row_masks([MaskRequest(state, []), MaskRequest(other, [])], world.model.config.vocab_size)
    expected = allowed_by_walking(state, drafts[:3])
    assert [m.numpy().tolist() for m in masks] == [e.tolist() for e in expected]
    assert single[0].numpy().tolist() == expected[0].tolist() == none[0].numpy().tolist()
    assert state.matcher.validate_tokens(drafts) == len(drafts)  # nothing was consumed


def test_drafts_are_cut_at_the_first_token_the_grammar_rejects(tokenizer):
    world = World(tokenizer, bigram(tokenizer))
    state = world.grammars.state(Constraint.choice(["yes", "no"]))
    yes = tokenizer.encode("yes")
    assert state.allowed(tokenizer.encode("maybe")) == 0
    assert state.allowed([*yes, EOS, *yes]) == len(yes) + 1  # EOS once the grammar accepts, nothing after
    assert state.allowed([EOS]) == 0  # never before it accepts


def _solo(world, seq_factory):
    return world.run([seq_factory()])[0]


def random_drafter(vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return ScriptDrafter(lambda seq, k: Draft(torch.randint(0, vocab, (k,), generator=g).tolist()))


def oracle_drafter(answer: list[int]):
    """Drafts the plain constrained output itself, then junk, so drafts are long, accepted and then cut."""

    def fn(seq, k):
        done = len(seq.output_ids)
        return Draft([*answer[done : done + k - 1], 3][:k])

    return ScriptDrafter(fn)


@pytest.mark.parametrize("constraint", CONSTRAINTS, ids=lambda c: c.kind)
def test_greedy_constrained_speculation_equals_constrained_plain_and_matches(tokenizer, constraint):
    world = World(tokenizer, bigram(tokenizer, seed=1))
    prompt = tokenizer.encode("let me think")
    params = SamplingParams(max_tokens=40, constraint=constraint)
    plain = world.run([world.sequence(prompt, params)])[0]
    assert plain.finish_reason in ("stop", "length")
    v = world.model.config.vocab_size
    oracle = oracle_drafter(plain.output_ids)
    drafters = [
        (FallbackDrafter([GrammarDrafter(), NgramDrafter(1, 3)]), 4),
        (NgramDrafter(1, 3), 4),
        (random_drafter(v, 0), 3),
        (FallbackDrafter([GrammarDrafter(), random_drafter(v, 1)]), 5),
        (oracle, 6),
    ]
    for drafter, k in drafters:
        out = world.run([world.sequence(prompt, params, drafter, k)])[0]
        assert out.output_ids == plain.output_ids, drafter.name
        assert out.finish_reason == plain.finish_reason
    if plain.finish_reason == "stop":
        text = tokenizer.decode(plain.output_ids)
        if constraint.kind == "regex":
            assert re.fullmatch(r"(abc|abd)+ [0-9]{2,4}", text), text
        elif constraint.kind == "choice":
            assert text in ("yes", "no", "maybe")
        elif constraint.kind == "json_schema":
            import json

            obj = json.loads(text)
            assert isinstance(obj["name"], str) and isinstance(obj["age"], int)


def test_forced_tokens_are_drafted_accepted_and_counted_apart(tokenizer):
    world = World(tokenizer, bigram(tokenizer, seed=2))
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 4}, "age": {"type": "integer", "maximum": 99}},
              "required": ["name", "age"], "additionalProperties": False}  # fmt: skip
    params = SamplingParams(max_tokens=40, constraint=Constraint.json_schema(schema))
    prompt = tokenizer.encode("abc")
    plain = world.run([world.sequence(prompt, params)])[0]
    fast = world.run([world.sequence(prompt, params, FallbackDrafter([GrammarDrafter(), NgramDrafter(1, 3)]), 2)])[0]
    assert fast.output_ids == plain.output_ids
    assert plain.finish_reason == "stop"  # the grammar completes (no EOS needed)
    assert fast.stats.forced_tokens > 0
    assert fast.stats.steps < plain.stats.steps
    # Forced tokens are not the drafter's: they appear in neither drafted nor accepted.
    assert fast.stats.accepted <= fast.stats.drafted
    assert fast.stats.new_tokens == fast.stats.steps + fast.stats.accepted + fast.stats.forced_tokens


def test_a_completed_grammar_stops_and_a_cut_one_is_length(tokenizer):
    world = World(tokenizer, bigram(tokenizer, seed=3))
    prompt = tokenizer.encode("abc")
    done = world.run([world.sequence(prompt, SamplingParams(max_tokens=20, constraint=Constraint.choice(["maybe"])))])[0]
    assert (done.finish_reason, tokenizer.decode(done.output_ids)) == ("stop", "maybe")
    long = Constraint.regex("[0-9]{30}")
    cut = world.run([world.sequence(prompt, SamplingParams(max_tokens=5, constraint=long))])[0]
    assert cut.finish_reason == "length" and not cut.grammar.matcher.is_accepting()


def test_constrained_and_unconstrained_share_a_step_each_as_alone(tokenizer):
    world = World(tokenizer, bigram(tokenizer, seed=4))
    prompts = [tokenizer.encode(t) for t in ("abc", "let me", "yes no", "Ada")]
    kinds = [CONSTRAINTS[0], None, CONSTRAINTS[2], CONSTRAINTS[1], None, CONSTRAINTS[3]]

    def make(i):
        params = SamplingParams(max_tokens=24, constraint=kinds[i])
        drafter = FallbackDrafter([GrammarDrafter(), NgramDrafter(1, 3)]) if i % 2 else NgramDrafter(1, 3)
        return world.sequence(prompts[i % len(prompts)], params, drafter, 1 + i % 4)

    solo = [world.run([make(i)])[0].output_ids for i in range(len(kinds))]
    together = world.run([make(i) for i in range(len(kinds))])
    assert [s.output_ids for s in together] == solo


# ------------------------------------------------------- rejection sampling

N = 6_000
# Chi-square critical values at significance 0.001 (scipy.stats.chi2.ppf(0.999, df)).
CHI2_CRIT_P001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322}


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_rejection_sampling_under_a_constraint_follows_the_masked_target(tokenizer):
    """The drafter's q puts most of its mass on tokens the grammar forbids; what is
    emitted must still follow the target's distribution masked to the grammar and
    renormalised, at the first and at the second position (one step, K = 2)."""
    world = World(tokenizer, bigram(tokenizer, seed=5, scale=1.0))
    chars = "fjqvw"  # in no merge of the tiny vocabulary: each is one token, and no token holds two
    constraint = Constraint.choice(list(chars))
    v = world.model.config.vocab_size
    letters = [tokenizer.encode(c)[0] for c in chars]
    q = torch.full((v,), 0.5 / (v - len(letters)))
    q[letters] = torch.tensor([0.2, 0.1, 0.1, 0.05, 0.05])  # half the mass is forbidden
    sampler = torch.Generator().manual_seed(11)

    def draft(seq, k):
        tokens = torch.multinomial(q, k, replacement=True, generator=sampler).tolist()
        return Draft(tokens, q.expand(k, v).clone())

    drafter = ScriptDrafter(draft)
    prompt = tokenizer.encode("abc")
    params = SamplingParams(temperature=1.0, max_tokens=4, constraint=constraint)
    first = np.zeros(len(letters))
    generator = torch.Generator().manual_seed(12)
    for _ in range(N):
        seq = world.sequence(prompt, params, drafter, 2, generator=generator)
        world.engine.admit(seq)
        world.engine.step([seq], [0])  # the prompt: emits the first token from the masked target
        world.engine.finish(seq)
        first[letters.index(seq.output_ids[0])] += 1
    p = torch.softmax(world.model.table[prompt[-1]][letters], dim=0).numpy()
    assert chi_square(first, p) < CHI2_CRIT_P001[len(letters) - 1]

    # Decoding with drafts: three letters, the first given, so one step drafts the other two.
    constraint = Constraint.regex(f"[{chars}]{{3}}")
    params = SamplingParams(temperature=1.0, max_tokens=4, constraint=constraint)
    counts = np.zeros((len(letters), len(letters)))
    for _ in range(N):
        seq = world.sequence(prompt + [letters[0]], params, drafter, 2, generator=generator)
        seq.num_prompt -= 1  # the last prompt token counts as emitted: the next step drafts
        seq.grammar.advance(letters[0])
        world.engine.admit(seq)
        while not seq.finished:
            world.engine.step([seq], [2])
        world.engine.finish(seq)
        a, b = seq.output_ids[1:3]
        counts[letters.index(a), letters.index(b)] += 1
    table = world.model.table
    p1 = torch.softmax(table[letters[0]][letters], dim=0)
    joint = (p1[:, None] * torch.softmax(table[letters][:, letters], dim=1)).numpy()
    assert chi_square(counts.ravel(), joint.ravel()) < 45.315  # chi2.ppf(0.999, df=24)


# ------------------------------------------------------- reasoning boundary


def scripted_world(tokenizer, script: list[int], prompt_len: int) -> World:
    """Row at position p prefers script[p - prompt_len + 1] strongly, then a fixed noise order."""
    v = tokenizer.vocab_size
    table = torch.randn(512, v, generator=torch.Generator().manual_seed(7))
    for i, token in enumerate(script):
        table[prompt_len - 1 + i, token] += 100.0
    return World(tokenizer, TableModel(table, by="position"))


@pytest.mark.parametrize("where", ["drafts", "bonus", "plain"])
def test_reasoning_boundary_inside_drafts_or_by_the_bonus_token(tokenizer, where):
    prompt = tokenizer.encode("abc abd")
    thought = tokenizer.encode("let me think about it</think>")
    junk = tokenizer.encode(" maybe 0123")  # what the target prefers after the boundary: the grammar forbids it
    script = thought + junk
    world = scripted_world(tokenizer, script, len(prompt))
    params = SamplingParams(max_tokens=30, constraint=Constraint.choice(["yes", "no"]), reasoning_end="</think>")
    boundary_end = len(thought)  # output index just past the boundary's last token

    def fn(seq, k):
        done = len(seq.output_ids)
        if where == "bonus" and done < boundary_end:  # stop one short: the bonus token completes it
            return Draft(script[done : min(done + k, boundary_end - 1)])
        return Draft(script[done : done + k])

    plain = world.run([world.sequence(prompt, params)])[0]
    seq = world.sequence(prompt, params, ScriptDrafter(fn), 8 if where != "plain" else 0)
    steps = []
    world.engine.admit(seq)
    while not seq.finished:
        before = len(seq.output_ids)
        world.engine.step([seq], [seq.num_speculative_tokens])
        steps.append((before, len(seq.output_ids)))
    text = tokenizer.decode(seq.output_ids)
    assert seq.output_ids == plain.output_ids
    assert text.startswith("let me think about it</think>")
    assert text.removeprefix("let me think about it</think>") in ("yes", "no"), text
    assert seq.finish_reason == "stop"
    if where == "drafts":  # one step wrote the boundary and went on past it, under the grammar
        assert any(b < boundary_end < a for b, a in steps), steps
    if where == "bonus":
        assert any(a == boundary_end for _, a in steps), steps
