"""The decode loop: draft, verify in one target forward, accept, roll back.

One step serves any number of sequences, each with its own draft length: the
rows of all sequences go through a single ragged forward, and each sequence
accepts its own count. Rollback is the cache slot's length, set once per step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq

import torch

from specwise.drafters.base import Draft, Drafter
from specwise.kv_cache import KVCache
from specwise.models.llama import LlamaModel
from specwise.models.tokenizer import Tokenizer
from specwise.sampling import probabilities
from specwise.sequence import Sequence
from specwise.verify import verify_greedy, verify_stochastic


class Engine:
    def __init__(self, model: LlamaModel, tokenizer: Tokenizer, cache: KVCache, drafter: Drafter | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cache = cache
        self.drafter = drafter
        self.last_draft_s = 0.0
        """Drafting time of the last step (the policy weighs it against the drafts)."""

    def prefill(self, seqs: Seq[Sequence]) -> None:
        """Run the prompts of new sequences (one ragged forward) and emit each first token."""
        now = time.perf_counter()
        tokens, positions, slots, last_rows = [], [], [], []
        for seq in seqs:
            seq.slot = self.cache.allocate()
            n = len(seq.token_ids)
            tokens += seq.token_ids
            positions += range(n)
            slots += [seq.slot] * n
            last_rows.append(len(tokens) - 1)
            seq.stats.prompt_tokens = seq.num_prompt
        hidden = self._hidden(tokens, positions, slots)
        logits = self.model.logits(hidden, torch.tensor(last_rows))
        for i, seq in enumerate(seqs):
            self.cache.truncate(seq.slot, len(seq.token_ids))
            _, first = self._verify(seq, logits[i : i + 1], Draft([]))
            self._append(seq, [first])
            seq.stats.ttft_s = seq.stats.prefill_s = time.perf_counter() - now
            seq.stats.prefills = 1
        if self.drafter is not None:
            starts = [0, *(r + 1 for r in last_rows[:-1])]
            features = [hidden[a : b + 1] for a, b in zip(starts, last_rows)] if self.drafter.needs_features else None
            self.drafter.on_verified(seqs, features)

    def max_draft(self, seq: Sequence) -> int:
        """Drafts beyond the token budget or the context are wasted work."""
        left = seq.params.max_tokens - len(seq.output_ids) - 1
        return max(0, min(left, self.cache.max_len - len(seq.token_ids)))

    def step(self, seqs: Seq[Sequence], ks: Seq[int]) -> tuple[list[int], list[int]]:
        """One target forward over every sequence; ks[i] drafts for seqs[i] (0 = plain).

        Returns the drafts verified and accepted per sequence."""
        ks = [min(k, self.max_draft(seq)) for seq, k in zip(seqs, ks)]
        t0 = time.perf_counter()
        if self.drafter is not None and any(ks):
            drafts = self.drafter.propose(seqs, ks)
        else:
            drafts = [Draft([]) for _ in seqs]
        t1 = time.perf_counter()
        self.last_draft_s = t1 - t0
        tokens, positions, slots = [], [], []
        for seq, draft in zip(seqs, drafts):
            start = len(seq.token_ids) - 1
            rows = [seq.token_ids[-1], *draft.tokens]
            tokens += rows
            positions += range(start, start + len(rows))
            slots += [seq.slot] * len(rows)
        hidden = self._hidden(tokens, positions, slots)
        logits = self.model.logits(hidden)
        t2 = time.perf_counter()
        offset = 0
        accepted: list[int] = []
        features: list[torch.Tensor] | None = [] if self.drafter is not None and self.drafter.needs_features else None
        for seq, draft in zip(seqs, drafts):
            k = len(draft.tokens)
            n, nxt = self._verify(seq, logits[offset : offset + k + 1], draft)
            if features is not None:
                features.append(hidden[offset : offset + n + 1])
            offset += k + 1
            accepted.append(n)
            seq.stats.record_step(k, n, draft_s=t1 - t0, target_s=t2 - t1)
            self.cache.truncate(seq.slot, len(seq.token_ids) + n)  # the fed token + n accepted drafts
            self._append(seq, [*draft.tokens[:n], nxt])
        if self.drafter is not None:
            self.drafter.on_verified(seqs, features)
        return [len(d.tokens) for d in drafts], accepted

    def finish(self, seq: Sequence) -> None:
        """Free the sequence's cache slot and drafter state (safe if prefill never ran)."""
        if seq.slot >= 0:
            self.cache.release(seq.slot)
            seq.slot = -1
        if self.drafter is not None:
            self.drafter.release(seq)

    def _hidden(self, tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        x = self.model.embed(torch.tensor(tokens)).contiguous()
        return self.model.hidden(x, torch.tensor(positions), torch.tensor(slots), self.cache)

    def _verify(self, seq: Sequence, logits: torch.Tensor, draft: Draft) -> tuple[int, int]:
        drafted = torch.tensor(draft.tokens, dtype=torch.int64)
        if seq.params.greedy:
            return verify_greedy(logits, drafted)
        return verify_stochastic(probabilities(logits, seq.params), drafted, draft.probs, seq.generator)

    def _append(self, seq: Sequence, new: list[int]) -> None:
        """Append verified tokens, stopping at EOS, the token budget, the context or a stop string."""
        p = seq.params
        for token in new:
            seq.token_ids.append(token)
            seq.stats.new_tokens += 1
            if token in self.tokenizer.eos_token_ids and not p.ignore_eos:
                seq.finish_reason = "stop"
            elif len(seq.token_ids) - seq.num_prompt >= p.max_tokens or len(seq.token_ids) >= self.cache.max_len:
                seq.finish_reason = "length"
            if p.stop and self._hit_stop(seq):
                seq.finish_reason = "stop"
            if seq.finish_reason:
                break
        if seq.finish_reason and not p.stop:
            seq.text = self.tokenizer.decode(seq.output_ids)

    def _hit_stop(self, seq: Sequence) -> bool:
        text = self.tokenizer.decode(seq.output_ids)
        cuts = [i for i in (text.find(s) for s in seq.params.stop) if i >= 0]
        seq.text = text[: min(cuts)] if cuts else text
        return bool(cuts)
