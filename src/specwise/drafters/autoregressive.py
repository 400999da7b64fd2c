"""Drafting one token at a time from a small network: the loop shared by every learned drafter.

Each round runs one batched forward over all sequences still drafting: the
first round also catches each sequence up on the tokens the target verified
since its last draft, later rounds feed the token just drafted. Subclasses
say what a forward is (a draft model, the target's own early layers, an
EAGLE head) and which of their cached positions survive verification.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from specwise.drafters.base import Draft
from specwise.errors import SpecwiseError
from specwise.models.llama import LlamaModel, TrimmedHead
from specwise.sampling import probabilities
from specwise.sequence import Sequence


class AutoregressiveDrafter:
    name = "autoregressive"
    needs_features = False
    reports_confidence = False

    def __init__(self, vocab_size: int, head: TrimmedHead | None) -> None:
        self.vocab_size = vocab_size
        self.head = head
        """Optional trimmed LM head: the draft picks among its ids only."""

    def propose(self, seqs: Seq[Sequence], ks: Seq[int]) -> list[Draft]:
        drafts = [Draft([]) for _ in seqs]
        live = [i for i, k in enumerate(ks) if k > 0]
        if not live:
            return drafts
        probs: dict[int, list[torch.Tensor]] = {i: [] for i in live}
        logits = self._catch_up([seqs[i] for i in live])
        while True:
            for row, i in enumerate(live):
                token, q = self._pick(seqs[i], logits[row])
                drafts[i].tokens.append(token)
                if q is not None:
                    probs[i].append(q)
            live = [i for i in live if len(drafts[i].tokens) < ks[i]]
            if not live:
                break
            logits = self._extend(
                [seqs[i] for i in live],
                [drafts[i].tokens[-1] for i in live],
                [len(seqs[i].token_ids) + len(drafts[i].tokens) - 1 for i in live],
            )
        for i, d in enumerate(drafts):
            if probs.get(i):
                d.probs = torch.stack(probs[i])
            self._drafted(seqs[i], d.tokens)
        return drafts

    def _pick(self, seq: Sequence, logits: torch.Tensor) -> tuple[int, torch.Tensor | None]:
        """The draft token, and its full-vocabulary distribution q when sampling."""
        ids = self.head.ids if self.head is not None else None
        if seq.params.greedy:
            j = int(torch.argmax(logits))
            return (int(ids[j]) if ids is not None else j), None
        q = probabilities(logits[None], seq.params)[0]
        j = int(torch.multinomial(q, 1, generator=seq.generator))
        if ids is None:
            return j, q
        full = torch.zeros(self.vocab_size, dtype=q.dtype)
        full[ids] = q
        return int(ids[j]), full

    def _catch_up(self, seqs: Seq[Sequence]) -> torch.Tensor:
        """Feed what each sequence's draft state lacks, up to its last token; logits [len(seqs), V']."""
        raise NotImplementedError

    def _extend(self, seqs: Seq[Sequence], tokens: Seq[int], positions: Seq[int]) -> torch.Tensor:
        """Feed one drafted token per sequence at its position; logits [len(seqs), V']."""
        raise NotImplementedError

    def _drafted(self, seq: Sequence, tokens: list[int]) -> None:
        """Note what this round left in the draft state (before verification)."""

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        pass

    def release(self, seq: Sequence) -> None:
        pass


def trimmed_head(model: LlamaModel, counts: torch.Tensor | None, vocab: int) -> TrimmedHead | None:
    """The LM head over the ``vocab`` most frequent tokens, or None for the full one."""
    if not 0 < vocab < model.config.vocab_size:
        return None
    if counts is None:
        raise SpecwiseError("--draft-vocab needs token frequencies, which this draft does not carry (train it with `specwise train-draft`)")
    return model.trimmed_head(torch.argsort(counts, descending=True, stable=True)[:vocab])
