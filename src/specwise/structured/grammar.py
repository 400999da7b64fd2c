"""One grammar matcher per constrained sequence, advanced as a transaction.

Within a step the matcher is only advanced tentatively: drafts are checked
(and cut at the first token the grammar rejects) and the masks of every
verify row are computed by walking through the drafts and rolling back.
Only after verification does it consume, for good, exactly the tokens the
sequence emitted. An optional reasoning boundary keeps the grammar off until
the output has written it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import llguidance
import llguidance.numpy as llnp
import numpy as np
import torch

from specwise.errors import SpecwiseError
from specwise.structured.constraint import Constraint, compile_grammar

TEMPLATES = 64
"""Compiled matchers kept for reuse, least recently used dropped first."""


class GrammarCompiler:
    """The target's tokenizer as llguidance sees it (built once, ~0.2 s) and matchers on it."""

    def __init__(self, tokenizer_json: str, vocab_size: int, eos_token_ids: Seq[int]) -> None:
        self.vocab_size = vocab_size
        self.eos_token_ids = sorted(eos_token_ids)
        self._json = tokenizer_json
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._lock = threading.Lock()
        self._bytes: dict[int, bytes] = {}
        self._templates: dict[Constraint, llguidance.LLMatcher] = {}

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = llguidance.LLTokenizer(self._json, n_vocab=self.vocab_size, eos_token=self.eos_token_ids)
            return self._tokenizer

    def state(self, constraint: Constraint, reasoning_end: str | None = None) -> GrammarState:
        """A fresh matcher for one sequence (raises SpecwiseError if the constraint is bad):
        a copy of one kept per recent constraint (building takes a millisecond or more,
        copying microseconds; traffic repeats its schemas)."""
        tokenizer = self.tokenizer
        with self._lock:
            template = self._templates.pop(constraint, None)
        if template is None:
            template = llguidance.LLMatcher(tokenizer, compile_grammar(constraint), log_level=0)
            if template.is_error():
                raise SpecwiseError(f"invalid {constraint.describe()}: {template.get_error().strip().splitlines()[0]}")
        with self._lock:
            self._templates[constraint] = template  # most recent last
            while len(self._templates) > TEMPLATES:
                self._templates.pop(next(iter(self._templates)))
            matcher = template.deep_copy()
        return GrammarState(matcher, self, reasoning_end)

    def token_bytes(self, token: int) -> bytes:
        if token not in self._bytes:
            self._bytes[token] = self.tokenizer.decode_bytes([token])
        return self._bytes[token]


class GrammarState:
    def __init__(self, matcher: llguidance.LLMatcher, compiler: GrammarCompiler, reasoning_end: str | None = None) -> None:
        self.matcher = matcher
        self.compiler = compiler
        self.boundary = reasoning_end.encode() if reasoning_end else b""
        self.active = not self.boundary
        """The grammar applies (no boundary, or the output has written it)."""
        self._tail = b""
        self._forced: list[int] | None = None

    def start(self, tokens: Seq[int]) -> int | None:
        """How many of ``tokens`` (emitted from here) precede the grammar's start: 0 if it
        applies already, None if the boundary is not completed within them."""
        if self.active:
            return 0
        tail = self._tail
        for i, token in enumerate(tokens):
            tail += self.compiler.token_bytes(token)
            if self.boundary in tail:
                return i + 1
            tail = tail[-(len(self.boundary) - 1) :] if len(self.boundary) > 1 else b""
        return None

    def allowed(self, drafts: Seq[int]) -> int:
        """How many leading drafts the grammar allows (EOS is allowed only where the grammar
        accepts, so never before the boundary)."""
        start = self.start(drafts)
        if start is None:
            return next((i for i, t in enumerate(drafts) if t in self.compiler.eos_token_ids), len(drafts))
        head = next((i for i, t in enumerate(drafts[:start]) if t in self.compiler.eos_token_ids), start)
        if head < start:
            return head
        return start + self.matcher.validate_tokens(list(drafts[start:]))

    def forced(self) -> list[int]:
        """Tokens the grammar allows alone from here (cached until the next token)."""
        if not self.active or self.matcher.is_stopped():
            return []
        if self._forced is None:
            self._forced = self.matcher.compute_ff_tokens()
        return self._forced

    def advance(self, token: int) -> bool:
        """Consume one emitted token for good; True when the grammar is complete (nothing
        but end-of-sequence could follow)."""
        self._forced = None
        if not self.active:
            self._tail += self.compiler.token_bytes(token)
            if self.boundary in self._tail:
                self.active = True
            self._tail = self._tail[-(len(self.boundary) - 1) :] if len(self.boundary) > 1 else b""
            return False
        if not self.matcher.consume_token(token):
            raise SpecwiseError(f"the grammar rejected emitted token {token}: {self.matcher.get_error()}")
        return self.matcher.is_stopped()


@dataclass(slots=True)
class MaskRequest:
    """The verify rows of one constrained sequence: rows 0..len(drafts), row r following drafts[:r]."""

    state: GrammarState
    drafts: list[int]


_executor: llguidance.LLExecutor | None = None


def row_masks(requests: Seq[MaskRequest], vocab_size: int) -> list[torch.Tensor]:
    """Allowed tokens, bool [len(drafts) + 1, vocab], for each request, in one llguidance
    call: each matcher walks through its drafts and rolls back, so no state changes.
    Rows before a reasoning boundary allow everything but end-of-sequence."""
    global _executor
    if _executor is None:
        _executor = llguidance.LLExecutor(num_threads=1)
    offsets = np.cumsum([0, *(len(r.drafts) + 1 for r in requests)])
    bitmask = llnp.allocate_token_bitmask(int(offsets[-1]), vocab_size)
    words = bitmask.view(np.uint32)
    jobs = []
    for req, offset in zip(requests, offsets):
        start = req.state.start(req.drafts)
        if start is None:
            start = len(req.drafts) + 1
        for eos in req.state.compiler.eos_token_ids:  # unconstrained rows before the boundary
            words[offset : offset + start, eos // 32] &= ~np.uint32(1 << (eos % 32))
        if start <= len(req.drafts):
            jobs.append((req.state.matcher, int(offset) + start, req.drafts[start:]))
    walks = [job for job in jobs if job[2]]
    if walks:
        llnp.fill_next_token_bitmask_par_with_draft_tokens(_executor, walks, bitmask)
    singles = [(m, row) for m, row, drafts in jobs if not drafts]  # llguidance refuses an empty walk
    if singles:
        llnp.fill_next_token_bitmask_par(_executor, singles, bitmask)
    bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[:, :vocab_size].astype(bool)
    allowed = torch.from_numpy(bits)
    return [allowed[offsets[i] : offsets[i + 1]] for i in range(len(requests))]
