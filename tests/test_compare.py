"""`generate --compare` starts both sides alike: an untimed warm-up of each, then
prompt by prompt in alternating order, each from a forgotten prefix cache."""

from __future__ import annotations

from specwise import Request, SamplingParams, SpeculativeConfig
from specwise.cli import _compare


class RecordingLLM:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def reset_prefix_cache(self) -> None:
        self.calls.append(("reset",))

    def generate(self, requests, params, spec, chat=True, concurrency=1):
        side = "spec" if spec is not None else "plain"
        self.calls.append((side, *[r.id for r in requests], str(params.max_tokens)))
        return [f"{side}:{r.id}" for r in requests]


def test_compare_warms_up_both_sides_then_alternates_prompt_by_prompt():
    llm = RecordingLLM()
    reqs = [Request(id=str(i), prompt="p") for i in range(3)]
    plain, fast = _compare(llm, reqs, SamplingParams(max_tokens=64), SpeculativeConfig("ngram", 4), True, 1)  # type: ignore[arg-type]
    assert plain == ["plain:0", "plain:1", "plain:2"] and fast == ["spec:0", "spec:1", "spec:2"]
    warm, timed = llm.calls[:2], llm.calls[2:]
    assert sorted(c[0] for c in warm) == ["plain", "spec"] and all(c[-1] == "8" for c in warm)
    runs = [c for c in timed if c[0] != "reset"]
    assert [c[0] for c in runs] == ["plain", "spec", "spec", "plain", "plain", "spec"]
    assert all(timed[i] == ("reset",) for i in range(0, len(timed), 2)), "every timed run starts from a forgotten prefix cache"
