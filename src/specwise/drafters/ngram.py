"""Prompt lookup: propose the tokens that followed the latest earlier match of the suffix.

Free to run (no model), and strong wherever the output copies its input:
summaries, retrieval-augmented answers, code edits.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from specwise.drafters.base import Draft
from specwise.errors import SpecwiseError
from specwise.sequence import Sequence


class NgramDrafter:
    name = "ngram"
    needs_features = False
    reports_confidence = False

    def __init__(self, min_n: int = 1, max_n: int = 3) -> None:
        if not 1 <= min_n <= max_n:
            raise SpecwiseError(f"n-gram range must satisfy 1 <= min <= max, got {min_n}..{max_n}")
        self.min_n, self.max_n = min_n, max_n

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        return [Draft(lookup(seq.token_ids, k, self.min_n, self.max_n) if k else []) for seq, k in zip(seqs, ks)]

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        pass

    def release(self, seq: Sequence) -> None:
        pass


def lookup(tokens: list[int], k: int, min_n: int, max_n: int) -> list[int]:
    """Longest n (max_n down to min_n): the most recent earlier occurrence of the
    last n tokens, followed by up to k tokens."""
    ctx = np.asarray(tokens, dtype=np.int64)
    length = ctx.shape[0]
    for n in range(min(max_n, length - 1), min_n - 1, -1):
        windows = sliding_window_view(ctx[: length - 1], n)  # windows ending before the suffix itself
        hits = np.flatnonzero((windows == ctx[length - n :]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return ctx[start : start + k].tolist()
    return []
