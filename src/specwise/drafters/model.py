"""Token-level draft models: a separate small model, or the target's own subset of layers.

A draft model keeps its own KV cache, with the same slots as the target's,
and rolls back by length like the target. Layer-skip self-speculation runs
some of the target's layers then its final norm and LM head. When those
layers are the first L, their keys and values for every verified position
are exactly what the target itself wrote (the kernels are batch-invariant),
so the draft reads and writes the target's cache and needs no state at all;
any other choice of layers keeps a private cache.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from specwise.drafters.autoregressive import AutoregressiveDrafter
from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.models.llama import LlamaModel, TrimmedHead
from specwise.models.tokenizer import Tokenizer
from specwise.sequence import Sequence


class ModelDrafter(AutoregressiveDrafter):
    """Drafts with ``model`` (its ``layers``), keeping keys and values in ``cache``."""

    def __init__(
        self,
        name: str,
        model: LlamaModel,
        cache: KVCache,
        *,
        layers: Seq[int] | None = None,
        shares_target_cache: bool = False,
        head: TrimmedHead | None = None,
    ) -> None:
        super().__init__(model.config.vocab_size, head)
        self.name = name
        self.model, self.cache = model, cache
        self.layers = list(range(len(model.layers))) if layers is None else list(layers)
        self.shared = shares_target_cache
        self.cache_layers = self.layers if self.shared else list(range(len(self.layers)))
        self._fed: dict[Sequence, int] = {}
        """Positions of the sequence whose keys and values the draft cache holds."""
        self._pending: dict[Sequence, tuple[int, list[int]]] = {}
        """After a draft: (length before it, the drafted tokens it fed)."""

    def _catch_up(self, seqs: Seq[Sequence]) -> torch.Tensor:
        tokens, positions, slots, last = [], [], [], []
        for seq in seqs:
            # A shared cache already holds every verified position but the last token.
            start = len(seq.token_ids) - 1 if self.shared else self._fed.get(seq, 0)
            tokens += seq.token_ids[start:]
            positions += range(start, len(seq.token_ids))
            slots += [seq.slot] * (len(seq.token_ids) - start)
            last.append(len(tokens) - 1)
        return self._forward(tokens, positions, slots, torch.tensor(last))

    def _extend(self, seqs: Seq[Sequence], tokens: Seq[int], positions: Seq[int]) -> torch.Tensor:
        return self._forward(list(tokens), list(positions), [s.slot for s in seqs], None)

    def _forward(self, tokens: list[int], positions: list[int], slots: list[int], rows: torch.Tensor | None) -> torch.Tensor:
        x = self.model.embed(torch.tensor(tokens)).contiguous()
        x = self.model.hidden(x, torch.tensor(positions), torch.tensor(slots), self.cache, self.layers, self.cache_layers)
        return self.model.logits(x, rows, self.head)

    def _drafted(self, seq: Sequence, tokens: list[int]) -> None:
        if tokens and not self.shared:
            # The draft fed the sequence's last token and all drafts but the final one.
            self._pending[seq] = (len(seq.token_ids), tokens[:-1])
            self._fed[seq] = len(seq.token_ids)

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        for seq in seqs:
            if seq not in self._pending:
                continue
            base, fed = self._pending.pop(seq)
            kept = 0
            for drafted, actual in zip(fed, seq.token_ids[base:]):
                if drafted != actual:
                    break
                kept += 1
            self._fed[seq] = base + kept

    def release(self, seq: Sequence) -> None:
        self._fed.pop(seq, None)
        self._pending.pop(seq, None)


def check_vocab(target: Tokenizer, vocab: dict[int, str]) -> None:
    """A draft must map every id to the same token as the target, or acceptance
    silently collapses; fail loudly naming the first id that differs."""
    t_vocab = {i: tok for tok, i in target.vocab().items()}
    for i in sorted(t_vocab.keys() | vocab.keys()):
        if t_vocab.get(i) != vocab.get(i):
            raise SpecwiseError(
                f"the draft model's tokenizer differs from the target's at id {i} "
                f"(target {t_vocab.get(i)!r}, draft {vocab.get(i)!r}): a draft must share the target's vocabulary"
            )


def check_tokenizers(target: Tokenizer, draft: Tokenizer) -> None:
    check_vocab(target, {i: tok for tok, i in draft.vocab().items()})
    if target.eos_token_ids != draft.eos_token_ids:
        raise SpecwiseError(
            f"the draft model's end-of-sequence ids {sorted(draft.eos_token_ids)} differ from the target's {sorted(target.eos_token_ids)}"
        )
