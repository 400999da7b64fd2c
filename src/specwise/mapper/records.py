"""What the mapper measures, as plain data every part shares: the workload's
items, the loads and configs it runs them under, and one record per request as
its client saw it. Targets (the in-process engine, an HTTP endpoint) produce
records; the measures, the recommendation and the report read them."""

from __future__ import annotations

from dataclasses import dataclass, field

from specwise.prompts import Request


@dataclass(slots=True)
class WorkItem:
    """One request of a workload."""

    request: Request
    """Prompt (text, messages or turns: the first user turn is what is sent), segment, constraint."""
    max_tokens: int | None = None
    """This request's own output budget (else the run's --max-tokens)."""
    arrival_s: float | None = None
    """Seconds from the start of a trace replay (``--rate trace``)."""

    @property
    def segment(self) -> str:
        return self.request.segment or "default"


def first_turn(request: Request) -> Request:
    """What a map sends of a request: its first user turn (an endpoint sees no more)."""
    if request.turns is None:
        return request
    return Request(id=request.id, prompt=request.turns[0], segment=request.segment, constraint=request.constraint)


@dataclass(slots=True, frozen=True)
class Load:
    """Closed loop (``concurrency`` requests in flight) or open loop (Poisson or gamma
    arrivals at ``rate`` requests/s; ``burstiness`` < 1 burstier, > 1 smoother)."""

    concurrency: int | None = None
    rate: float | None = None
    burstiness: float = 1.0

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if self.concurrency is not None else f"r={self.rate:g}"

    @property
    def value(self) -> float:
        return float(self.concurrency if self.concurrency is not None else self.rate)  # type: ignore[arg-type]


@dataclass(slots=True, frozen=True)
class MapConfig:
    """One way to serve: ``plain``, ``fixed`` (K drafts every step) or ``adaptive``
    (the policy picks 0..K), with a drafter."""

    name: str
    """As the user wrote it: plain, fixed, adaptive, or fixed:eagle, adaptive:ngram+eagle, ..."""
    policy: str
    """plain | fixed | adaptive"""
    drafter: str = "none"
    num_speculative_tokens: int = 0

    @property
    def speculates(self) -> bool:
        return self.policy != "plain"


@dataclass(slots=True)
class Record:
    """One request, as its client saw it. Times in seconds; ``sent_s`` from the run's start."""

    request_id: str
    segment: str
    prompt_tokens: int
    output_tokens: int
    sent_s: float
    ttft_s: float
    """From sending to the first token."""
    latency_s: float
    """From sending to the last token."""
    chunk_gaps_s: list[float] = field(default_factory=list)
    """Between consecutive streamed chunks (one per engine step: the inter-token latency)."""
    finish_reason: str = "stop"
    error: str | None = None
    """Why the request failed (then its figures are not counted)."""
    drafted: int | None = None
    """Draft tokens verified, where the target reports it per request (None: unknown)."""
    accepted: int | None = None
    drafted_by_position: list[int] = field(default_factory=list)
    accepted_by_position: list[int] = field(default_factory=list)
    steps: int | None = None
    """Verify steps after the first token, where known."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first (None for a one-token answer)."""
        return (self.latency_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else None


@dataclass(slots=True)
class Acceptance:
    """Draft counts of a whole run, read from what a target exposes beside the
    responses (Prometheus counters before and after, summed per-response timings)."""

    drafted: int
    accepted: int
    accepted_by_position: list[int] = field(default_factory=list)
    source: str = ""
    """Where they came from: "specwise /metrics", "vllm /metrics", "sglang /metrics", "llama.cpp timings"."""


@dataclass(slots=True)
class Run:
    """One config at one load: every request's record and the run's wall time."""

    config: MapConfig
    load: Load
    records: list[Record]
    elapsed_s: float
    repeat: int = 0
    acceptance: Acceptance | None = None
    interrupted: bool = False
