"""The decode loop: draft, verify in one target forward, accept, roll back.

One step serves any number of sequences, each with its own draft length: the
rows of all sequences go through a single ragged forward, and each sequence
accepts its own count. Prompts are fed by the same steps, in chunks beside
the decoding sequences' rows (chunked prefill), so a long prompt never stalls
the others for its whole length. Rollback is the cache slot's length, set
once per step.
"""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq

import torch

from specwise.drafters.base import Draft
from specwise.drafters.grammar import forces
from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.models.llama import LlamaModel
from specwise.models.tokenizer import Tokenizer
from specwise.sampling import probabilities
from specwise.sequence import Sequence, group_by
from specwise.structured.grammar import MaskRequest, row_masks
from specwise.verify import verify_greedy, verify_stochastic


class Engine:
    """One step over sequences that each bring their own drafter (or none): the
    engine groups them by drafter, so requests with different drafters, draft
    lengths or no speculation at all share one target forward."""

    def __init__(self, model: LlamaModel, tokenizer: Tokenizer, cache: KVCache) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.cache = cache
        self.last_draft_s: dict[str, float] = {}
        """Drafting time of the last step, per drafter name (the policy weighs it against the drafts)."""
        self.last_rows = 0
        """Rows the last step's target forward ran (fed tokens, drafts and forced tokens)."""

    def admit(self, seq: Sequence) -> None:
        """Give a new sequence a cache slot; its prompt is fed by later steps, in chunks,
        from the end of the longest prefix a freed slot still holds (a conversation's
        history, a shared system prompt). Drafters that learn from the target's hidden
        states need them for every position, so with those the whole prompt is fed."""
        reuse = seq.drafter is None or not seq.drafter.needs_features
        seq.slot = self.cache.allocate(seq.token_ids if reuse else ())
        seq.stats.prompt_tokens = seq.num_prompt
        seq.stats.cached_tokens = self.cache.lengths[seq.slot]

    def pending(self, seq: Sequence) -> int:
        """Tokens of the sequence not yet in its cache slot: the unfed part of the
        prompt, or 1 (the last token) once it is decoding."""
        return len(seq.token_ids) - self.cache.lengths[seq.slot]

    @staticmethod
    def decoding(seq: Sequence) -> bool:
        """Past its prompt (it has emitted a token), so it may draft."""
        return len(seq.token_ids) > seq.num_prompt

    def max_draft(self, seq: Sequence) -> int:
        """Drafts beyond the token budget or the context are wasted work."""
        left = seq.params.max_tokens - len(seq.output_ids) - 1
        return max(0, min(left, self.cache.max_len - len(seq.token_ids)))

    def step(self, seqs: Seq[Sequence], ks: Seq[int], chunks: Seq[int] | None = None) -> tuple[list[int], list[int]]:
        """One target forward over every sequence: chunks[i] of seqs[i]'s pending tokens
        (default: all of them), then ks[i] drafts (0 = plain). A sequence whose chunk
        reaches its last token emits tokens this step; drafts are only made for those
        that are decoding. Returns the drafts verified and accepted per sequence."""
        pending = [self.pending(s) for s in seqs]
        chunks = pending if chunks is None else list(chunks)
        emits = [c == p for c, p in zip(chunks, pending)]
        ks = [self._draft_len(s, k) if e and self.decoding(s) and s.drafter is not None else 0 for s, k, e in zip(seqs, ks, emits)]
        groups = group_by(seqs, lambda s: s.drafter)
        drafts = [Draft([]) for _ in seqs]
        self.last_draft_s = {}
        t0 = time.perf_counter()
        for drafter, idx in groups:
            if any(ks[i] for i in idx):
                start = time.perf_counter()
                for i, d in zip(idx, drafter.propose([seqs[i] for i in idx], [ks[i] for i in idx])):
                    drafts[i] = d
                self.last_draft_s[drafter.name] = time.perf_counter() - start
        running = sum(1 for s, e in zip(seqs, emits) if e and self.decoding(s))
        for policy, idx in group_by(seqs, lambda s: s.policy if s.drafter is not None else None):
            if any(drafts[i].tokens for i in idx):
                others = sum(chunks) + sum(len(d.tokens) for d in drafts) - sum(len(drafts[i].tokens) for i in idx)
                for i, d in zip(idx, policy.refine([seqs[i] for i in idx], [drafts[i] for i in idx], running, others)):
                    drafts[i] = d
        masks, grammar_s = self._grammar(seqs, drafts, emits)
        t1 = time.perf_counter()
        tokens, positions, slots, logit_rows, offsets = [], [], [], [], []
        for seq, draft, chunk, emit in zip(seqs, drafts, chunks, emits):
            start = self.cache.lengths[seq.slot]
            rows = [*seq.token_ids[start : start + chunk], *draft.tokens]
            if emit:  # the last token's row and the drafts' rows give logits
                logit_rows += range(len(tokens) + chunk - 1, len(tokens) + len(rows))
            offsets.append(len(tokens))
            tokens += rows
            positions += range(start, start + len(rows))
            slots += [seq.slot] * len(rows)
        self.last_rows = len(tokens)
        hidden = self._hidden(tokens, positions, slots)
        logits = self.model.logits(hidden, torch.tensor(logit_rows, dtype=torch.long))
        t2 = time.perf_counter()
        lrow = 0
        drafted: list[int] = []
        accepted: list[int] = []
        verified: list[int] = []
        for i, (seq, draft, chunk, emit) in enumerate(zip(seqs, drafts, chunks, emits)):
            k, n, prompt = len(draft.tokens), 0, not self.decoding(seq)
            end = self.cache.lengths[seq.slot] + chunk
            if emit:
                n, nxt = self._verify(seq, logits[lrow : lrow + k + 1], draft, masks.get(i))
                lrow += k + 1
            # Forced tokens are not the drafter's guesses: its counts (and the policy's) leave them out.
            own_k, own_n = k - draft.forced, max(0, n - draft.forced)
            if prompt:
                seq.stats.prefill_s += t2 - t0
            elif emit:
                own_draft_s = self.last_draft_s.get(seq.drafter.name, 0.0) if seq.drafter is not None else 0.0
                seq.stats.record_step(own_k, own_n, draft_s=own_draft_s, target_s=t2 - t1)
                seq.stats.forced_tokens += n - own_n
            drafted.append(own_k)
            accepted.append(own_n)
            verified.append(n)
            self.cache.truncate(seq.slot, end + n)  # the fed tokens + n accepted drafts
            if emit:
                start = time.perf_counter()
                emitted = self._append(seq, [*draft.tokens[:n], nxt])
                if seq.grammar is not None:
                    spent = grammar_s.get(i, 0.0) + time.perf_counter() - start
                    seq.stats.record_mask(spent, emitted)
                if prompt:
                    seq.stats.ttft_s = time.perf_counter() - seq.started_at
                    seq.stats.prefills = 1
        for drafter, idx in groups:
            # The target's hidden states at the positions each sequence just verified:
            # the prompt chunk fed, or the fed token and the accepted drafts.
            features = [hidden[offsets[i] : offsets[i] + chunks[i] + verified[i]] for i in idx] if drafter.needs_features else None
            drafter.on_verified([seqs[i] for i in idx], features)
        return drafted, accepted

    def finish(self, seq: Sequence, *, keep: bool = True) -> None:
        """Free the sequence's cache slot and drafter state (safe if it was never admitted).
        ``keep`` leaves its tokens for prefix reuse; a failed step's slots may hold
        half-written positions, so they keep nothing."""
        if seq.slot >= 0:
            self.cache.release(seq.slot, seq.token_ids if keep else ())
            seq.slot = -1
        if seq.drafter is not None:
            seq.drafter.release(seq)

    def _hidden(self, tokens: list[int], positions: list[int], slots: list[int]) -> torch.Tensor:
        x = self.model.embed(torch.tensor(tokens)).contiguous()
        return self.model.hidden(x, torch.tensor(positions), torch.tensor(slots), self.cache)

    def _draft_len(self, seq: Sequence, k: int) -> int:
        """The policy's K, raised to the grammar's forced run where the drafter proposes it
        (those drafts cannot be rejected), within the token budget and the context."""
        if seq.grammar is not None and forces(seq.drafter):
            k = max(k, len(seq.grammar.forced()))
        return min(k, self.max_draft(seq))

    def _grammar(self, seqs: Seq[Sequence], drafts: list[Draft], emits: list[bool]) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
        """Before the target forward, for each constrained sequence that emits: cut its
        drafts at the first token the grammar rejects (no row is spent on a token that
        cannot be emitted), and the allowed tokens of each of its K + 1 logit rows.
        Returns the masks and the time spent, by index of the sequence."""
        idx = [i for i, (s, e) in enumerate(zip(seqs, emits)) if e and s.grammar is not None]
        if not idx:
            return {}, {}
        start = time.perf_counter()
        for i in idx:
            draft = drafts[i]
            n = seqs[i].grammar.allowed(draft.tokens) if draft.tokens else 0  # type: ignore[union-attr]
            if n < len(draft.tokens):
                drafts[i] = draft.cut(n)
        masks = row_masks([MaskRequest(seqs[i].grammar, drafts[i].tokens) for i in idx], self.model.config.vocab_size)  # type: ignore[arg-type]
        rows = sum(len(drafts[i].tokens) + 1 for i in idx)
        spent = time.perf_counter() - start
        return dict(zip(idx, masks)), {i: spent * (len(drafts[i].tokens) + 1) / rows for i in idx}

    def _verify(self, seq: Sequence, logits: torch.Tensor, draft: Draft, allowed: torch.Tensor | None) -> tuple[int, int]:
        """Greedy takes the masked argmax; rejection sampling compares the masked,
        renormalised target with the drafter's q masked the same way (a draft token
        passed the grammar, so q keeps mass on the allowed set)."""
        drafted = torch.tensor(draft.tokens, dtype=torch.int64)
        q = draft.probs
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
            if q is not None:
                q = q * allowed[: len(draft.tokens)]
                q = q / q.sum(dim=-1, keepdim=True)
        if seq.params.greedy:
            return verify_greedy(logits, drafted)
        return verify_stochastic(probabilities(logits, seq.params), drafted, q, seq.generator)

    def _append(self, seq: Sequence, new: list[int]) -> int:
        """Append verified tokens, stopping at EOS, a completed grammar, the token budget,
        the context or a stop string; returns how many were appended."""
        p = seq.params
        appended = 0
        for token in new:
            seq.token_ids.append(token)
            seq.stats.new_tokens += 1
            appended += 1
            complete = False
            if seq.grammar is not None:
                try:
                    complete = seq.grammar.advance(token)
                except SpecwiseError as exc:  # a bug, not the user's: this sequence fails, the step goes on
                    seq.error, seq.finish_reason = exc, "error"
                    break
            if (token in self.tokenizer.eos_token_ids and not p.ignore_eos) or complete:
                seq.finish_reason = "stop"
            elif len(seq.token_ids) - seq.num_prompt >= p.max_tokens or len(seq.token_ids) >= self.cache.max_len:
                seq.finish_reason = "length"
            if p.stop and self._hit_stop(seq):
                seq.finish_reason = "stop"
            if seq.finish_reason:
                break
        if seq.finish_reason and not p.stop:
            seq.text = self.tokenizer.decode(seq.output_ids)
        return appended

    def _hit_stop(self, seq: Sequence) -> bool:
        text = self.tokenizer.decode(seq.output_ids)
        cuts = [i for i in (text.find(s) for s in seq.params.stop) if i >= 0]
        seq.text = text[: min(cuts)] if cuts else text
        return bool(cuts)
