"""Per-request counters. Counts are recorded; rates are derived."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestStats:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens not fed: their keys and values were still in the cache slot from
    an earlier request that began the same way (all turns)."""
    new_tokens: int = 0
    steps: int = 0
    """Target forward passes after the prefill (each yields at least one token)."""
    num_drafts: int = 0
    """Steps that verified at least one drafted token."""
    drafted: int = 0
    accepted: int = 0
    drafted_by_position: list[int] = field(default_factory=list)
    accepted_by_position: list[int] = field(default_factory=list)
    queue_s: float = 0.0
    """Waiting for a free slot (all turns)."""
    ttft_s: float = 0.0
    """From admission (the start of the prefill) to the first token; add queue_s for
    the time a client waited in total."""
    prefills: int = 0
    """Prompts fed (one per turn); each yields one token."""
    prefill_s: float = 0.0
    """Time of the steps that fed this request's prompt chunks (all turns), so
    decode speed can be told apart."""
    wall_s: float = 0.0
    """From the start of the prefill to the last token (summed over turns); latency is queue_s + wall_s."""

    forced_tokens: int = 0
    """Tokens emitted as the grammar's forced drafts (not counted in drafted/accepted)."""
    mask_s: float = 0.0
    """Time spent on the grammar: checking drafts, row masks, consuming tokens."""
    mask_s_per_token: list[float] = field(default_factory=list)
    """Grammar time per emitted token, one entry per step (for percentiles)."""

    draft_s: float = 0.0
    """Time spent drafting, in the steps this request took part in."""
    target_s: float = 0.0
    """Time spent in target forwards (verification), in the same steps."""

    def record_step(self, drafted: int, accepted: int, draft_s: float = 0.0, target_s: float = 0.0) -> None:
        self.steps += 1
        self.draft_s += draft_s
        self.target_s += target_s
        if not drafted:
            return
        self.num_drafts += 1
        self.drafted += drafted
        self.accepted += accepted
        grow = drafted - len(self.drafted_by_position)
        if grow > 0:
            self.drafted_by_position.extend([0] * grow)
            self.accepted_by_position.extend([0] * grow)
        for i in range(drafted):
            self.drafted_by_position[i] += 1
        for i in range(accepted):
            self.accepted_by_position[i] += 1

    def record_mask(self, seconds: float, tokens: int) -> None:
        self.mask_s += seconds
        if tokens:
            self.mask_s_per_token.append(seconds / tokens)

    def merge(self, other: RequestStats) -> None:
        """Add another turn's counters (multi-turn conversations)."""
        for name in ("cached_tokens", "new_tokens", "steps", "num_drafts", "drafted", "accepted", "wall_s", "prefills", "prefill_s", "queue_s", "draft_s", "target_s", "forced_tokens", "mask_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.prompt_tokens = max(self.prompt_tokens, other.prompt_tokens)
        self.mask_s_per_token += other.mask_s_per_token
        for mine, theirs in ((self.drafted_by_position, other.drafted_by_position), (self.accepted_by_position, other.accepted_by_position)):
            mine.extend([0] * (len(theirs) - len(mine)))
            for i, v in enumerate(theirs):
                mine[i] += v

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def mean_accepted_per_step(self) -> float:
        """Drafted tokens accepted per target step (0 for plain decoding)."""
        return self.accepted / self.steps if self.steps else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens not made by a prefill, over the time outside prefills."""
        decode_s = self.wall_s - self.prefill_s
        return (self.new_tokens - self.prefills) / decode_s if decode_s > 0 else 0.0

    @property
    def draft_cost_ratio(self) -> float:
        """c: drafting time per drafted token over target time per step (one draft
        forward against one target forward, at batch 1)."""
        if not self.drafted or not self.target_s:
            return 0.0
        return (self.draft_s / self.drafted) / (self.target_s / self.steps)

    def acceptance_by_position(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_by_position, self.drafted_by_position)]

    def to_dict(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "new_tokens": self.new_tokens,
            "steps": self.steps,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "mean_accepted_per_step": round(self.mean_accepted_per_step, 4),
            "forced_tokens": self.forced_tokens,
            "accepted_by_position": list(self.accepted_by_position),
            "drafted_by_position": list(self.drafted_by_position),
            "wall_s": round(self.wall_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 2),
            "ttft_s": round(self.ttft_s, 4),
            "draft_s": round(self.draft_s, 4),
            "target_s": round(self.target_s, 4),
            "mask_s": round(self.mask_s, 4),
            "queue_s": round(self.queue_s, 4),
        }
