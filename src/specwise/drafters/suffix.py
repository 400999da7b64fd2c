"""Suffix decoding: drafts from the text of earlier requests and of this one.

Traffic repeats itself across requests (system prompts, JSON shapes, code
idioms, agents re-issuing near-identical calls), which prompt lookup cannot
see: it only copies from the request's own context. After SuffixDecoding
(Oliaro et al., NeurIPS 2025), this drafter matches the longest suffix of the
context against the outputs of recent requests and the request's own prompt
and output, and walks the most frequent continuation of that match. Each
token carries its empirical frequency among the matched occurrences (the
counts of a suffix tree's children), and the walk stops where the product of
those falls below a threshold: long drafts where the text is predictable,
none where it is not.

The occurrences are found through an index of n-grams (positions of the
token after each n-gram, per key, in arrival order) over a bounded ring of
tokens, instead of an explicit tree: the same counts, with O(1) incremental
insertion and eviction of the oldest requests first. Descending the tree is
filtering the matched occurrences by the token chosen.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import numpy as np
import torch

from specwise.drafters.base import Draft
from specwise.errors import SpecwiseError
from specwise.sequence import Sequence

SEP = -1  # between requests in the ring: matches nothing, ends every walk
ORDERS = (4, 2)  # n-gram keys tried longest first
MAX_MATCH = 16  # longest suffix compared when ranking occurrences
MAX_OCCURRENCES = 128  # most recent occurrences of a key examined per draft


def _keys(tokens: np.ndarray, n: int) -> np.ndarray:
    """Key of the n-gram ending at each position i >= n - 1 (exact for ids < 2^15 per
    slot of a 60-bit int; larger ids fold, which only merges rare keys)."""
    out = np.zeros(max(0, tokens.shape[0] - n + 1), dtype=np.int64)
    for j in range(n):
        out = (out << 15) ^ tokens[j : tokens.shape[0] - n + 1 + j].astype(np.int64)
    return out


@dataclass(slots=True)
class _Index:
    """n-gram key -> positions (of the token after the n-gram), ascending."""

    n: int
    table: dict[int, list[int]] = field(default_factory=dict)

    def add(self, tokens: np.ndarray, base: int, start: int) -> None:
        """Index the n-grams of ``tokens`` (global offset ``base``) whose next token is
        at index >= ``start`` and exists."""
        lo = max(0, start - self.n)
        if tokens.shape[0] - lo <= self.n:
            return
        for i, key in enumerate(_keys(tokens[lo:-1], self.n).tolist(), lo):
            self.table.setdefault(key, []).append(base + i + self.n)

    def remove_before(self, tokens: np.ndarray, end: int) -> None:
        """Forget the positions < ``end`` under the keys of ``tokens`` (an evicted request)."""
        keys = _keys(tokens[:-1], self.n) if tokens.shape[0] > self.n else np.zeros(0, dtype=np.int64)
        for key in set(keys.tolist()):
            positions = self.table.get(key)
            if positions is None:
                continue
            del positions[: bisect.bisect_left(positions, end)]
            if not positions:
                del self.table[key]

    def find(self, key: int) -> list[int]:
        return self.table.get(key, [])[-MAX_OCCURRENCES:]

    def entries(self) -> int:
        return sum(len(v) for v in self.table.values())


class SuffixStore:
    """The outputs of recent requests, shared by every suffix drafter of one engine
    loop and kept between requests. Bounded by requests and by tokens; the oldest
    request is evicted first."""

    def __init__(self, max_requests: int = 10_000, max_tokens: int = 1_000_000) -> None:
        if max_requests < 1 or max_tokens < 64:
            raise SpecwiseError(
                f"a suffix store needs room: max_requests >= 1 and max_tokens >= 64, got {max_requests}, {max_tokens}"
            )
        self.max_requests, self.max_tokens = max_requests, max_tokens
        self.ring = np.full(max_tokens, SEP, dtype=np.int32)
        self.clear()

    def clear(self) -> None:
        """Forget every stored request."""
        self.end = 0
        """Global position after the last stored token (ring index = position % max_tokens)."""
        self.requests: deque[tuple[int, int]] = deque()
        """(start, end) global positions of each stored request, oldest first."""
        self.indexes = [_Index(n) for n in ORDERS]

    def _span(self) -> int:
        """Ring positions in use: the stored tokens and their separators."""
        return self.end - self.requests[0][0] if self.requests else 0

    @property
    def tokens(self) -> int:
        return sum(e - s for s, e in self.requests)

    def tokens_at(self, positions: np.ndarray) -> np.ndarray:
        """Tokens at global positions; SEP where a position is evicted or not yet written."""
        out = self.ring[positions % self.max_tokens].astype(np.int64)
        oldest = self.requests[0][0] if self.requests else self.end
        out[(positions < oldest) | (positions >= self.end)] = SEP
        return out

    def add(self, tokens: Seq[int]) -> None:
        """Store one finished request's output (the part worth recalling)."""
        arr = np.asarray(tokens[-(self.max_tokens - 1) :], dtype=np.int64)
        if arr.shape[0] < 2:
            return
        while self.requests and (len(self.requests) >= self.max_requests or self._span() + arr.shape[0] + 1 > self.max_tokens):
            self._evict()
        start = self.end
        idx = (start + np.arange(arr.shape[0] + 1)) % self.max_tokens
        self.ring[idx] = np.append(arr, SEP)
        self.end = start + arr.shape[0] + 1
        self.requests.append((start, start + arr.shape[0]))
        for index in self.indexes:
            index.add(arr, start, 0)

    def _evict(self) -> None:
        start, end = self.requests.popleft()
        arr = self.ring[np.arange(start, end) % self.max_tokens].astype(np.int64)
        for index in self.indexes:
            index.remove_before(arr, end)

    def memory(self) -> dict[str, int]:
        """What the store holds, for reporting and for the bound's test."""
        entries = sum(index.entries() for index in self.indexes)
        keys = sum(len(index.table) for index in self.indexes)
        # ~8 bytes a list slot + ~28 an int per entry, ~100 a key with its list
        return {"requests": len(self.requests), "tokens": self.tokens, "index_entries": entries, "keys": keys,
                "approx_bytes": self.ring.nbytes + 36 * entries + 100 * keys}  # fmt: skip


@dataclass(slots=True)
class _Local:
    """One live sequence's own tokens (prompt and output), copied and indexed as they
    arrive (a step costs its new tokens, not the whole context)."""

    indexes: list[_Index] = field(default_factory=lambda: [_Index(n) for n in ORDERS])
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    indexed: int = 0

    def update(self, token_ids: list[int]) -> np.ndarray:
        n = len(token_ids)
        if n > self.tokens.shape[0]:
            grown = np.zeros(max(n, 2 * self.tokens.shape[0]), dtype=np.int64)
            grown[: self.indexed] = self.tokens[: self.indexed]
            self.tokens = grown
        self.tokens[self.indexed : n] = token_ids[self.indexed :]
        ctx = self.tokens[:n]
        for index in self.indexes:
            index.add(ctx, 0, self.indexed)
        self.indexed = n
        return ctx


class SuffixDrafter:
    """Most frequent continuation of the longest matched suffix, over the store and
    the sequence itself, with each token's frequency as its confidence."""

    name = "suffix"
    needs_features = False
    reports_confidence = True

    def __init__(self, store: SuffixStore, threshold: float = 0.1) -> None:
        if not 0.0 <= threshold < 1.0:
            raise SpecwiseError(f"the suffix drafter's confidence threshold must be in [0, 1), got {threshold}")
        self.store, self.threshold = store, threshold
        self._local: dict[int, _Local] = {}

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        return [self._draft(seq, k) if k else Draft([]) for seq, k in zip(seqs, ks)]

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        pass

    def release(self, seq: Sequence) -> None:
        self._local.pop(id(seq), None)
        if seq.finish_reason in ("stop", "length"):
            self.store.add(seq.output_ids)

    def _draft(self, seq: Sequence, k: int) -> Draft:
        local = self._local.setdefault(id(seq), _Local())
        ctx = local.update(seq.token_ids)
        for n, own, shared in zip(ORDERS, local.indexes, self.store.indexes):
            if ctx.shape[0] < n:
                continue
            key = int(_keys(ctx[-n:], n)[0])
            mine = np.asarray(own.find(key), dtype=np.int64)
            theirs = np.asarray(shared.find(key), dtype=np.int64)
            if mine.size or theirs.size:
                return self._walk(ctx, mine, theirs, k)
        return Draft([])

    def _walk(self, ctx: np.ndarray, mine: np.ndarray, theirs: np.ndarray, k: int) -> Draft:
        """Keep the occurrences with the longest match, then follow the most frequent
        next token while the product of the frequencies stays above the threshold."""
        length = ctx.shape[0]

        def mine_at(pos: np.ndarray) -> np.ndarray:
            out = np.full(pos.shape, SEP, dtype=np.int64)
            ok = (pos >= 0) & (pos < length)
            out[ok] = ctx[pos[ok]]
            return out

        back = np.arange(1, MAX_MATCH + 1)
        suffix = mine_at(length - back)
        suffix[suffix == SEP] = SEP - 1  # before the context's start nothing matches
        scores = [((mine_at(mine[:, None] - back) == suffix).cumprod(axis=1).sum(axis=1), mine, mine_at)]
        scores.append(
            ((self.store.tokens_at(theirs[:, None] - back) == suffix).cumprod(axis=1).sum(axis=1), theirs, self.store.tokens_at)
        )
        own, best = (max(int(s.max()) if s.size else 0 for s, _, _ in group) for group in (scores[:1], scores))
        if own == best:
            scores.pop()  # the request's own text first: where it matches as long, it tells more
        ahead = np.arange(k)
        follow = np.concatenate([at(pos[s >= best][:, None] + ahead) for s, pos, at in scores])
        # The walk runs over distinct continuations with their counts: few, once matched.
        alive = list(Counter(map(tuple, follow.tolist())).items())
        tokens: list[int] = []
        confidence: list[float] = []
        product = 1.0
        for j in range(k):
            tally: dict[int, int] = {}
            for row, count in alive:
                if row[j] != SEP:
                    tally[row[j]] = tally.get(row[j], 0) + count
            if not tally:
                break
            token, top = max(tally.items(), key=lambda kv: (kv[1], -kv[0]))  # ties: the lowest id
            share = top / sum(tally.values())
            if product * share < self.threshold:
                break
            product *= share
            tokens.append(token)
            confidence.append(share)
            alive = [(row, count) for row, count in alive if row[j] == token]
        return Draft(tokens, confidence=confidence)
