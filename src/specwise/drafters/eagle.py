"""An EAGLE-style head (Li et al. 2024): one decoder layer that predicts the
target's next feature from its current feature and the next token's embedding.

Features are the target's final-normed hidden states, the input of its LM
head; the head reuses the target's frozen embedding and LM head, so it adds
one layer (about 4 M parameters for a 576-wide model). Pair i is (feature at
position i, token at position i + 1) and lives at position i of the head's
own one-layer KV cache. After each verification the head is re-fed the
accepted positions with the target's true features, replacing its guesses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence as Seq
from dataclasses import replace
from pathlib import Path

import torch

from specwise.drafters.autoregressive import AutoregressiveDrafter, trimmed_head
from specwise.errors import SpecwiseError
from specwise.kv_cache import KVCache
from specwise.models import native
from specwise.models.llama import Layer, LlamaModel, run_layers
from specwise.sequence import Sequence

FORMAT = "specwise-eagle/1"


def save_eagle(path: Path, weights: dict[str, torch.Tensor], meta: dict[str, object]) -> None:
    """fc.weight [H, 2H], layer.* (HF names), token_counts [V] (draft-vocabulary ranking)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path), metadata={"format": FORMAT, "meta": json.dumps(meta)})


def load_eagle(path: Path, target: LlamaModel) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    if not path.is_file():
        raise SpecwiseError(f"EAGLE head {path} not found")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error type on a bad header
        raise SpecwiseError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise SpecwiseError(f"{path} is not an EAGLE head written by specwise (format {meta.get('format')!r})")
    c = target.config
    fc = weights.get("fc.weight")
    if fc is None or tuple(fc.shape) != (c.hidden_size, 2 * c.hidden_size) or weights["token_counts"].shape[0] != c.vocab_size:
        raise SpecwiseError(f"EAGLE head {path} was trained for another model shape than the target's")
    return weights


class EagleDrafter(AutoregressiveDrafter):
    name = "eagle"
    needs_features = True
    reports_confidence = False

    def __init__(self, target: LlamaModel, weights: dict[str, torch.Tensor], num_slots: int, max_len: int, vocab: int = 0) -> None:
        """``vocab`` > 0 drafts over the ``vocab`` most frequent tokens only."""
        weights = dict(weights)
        super().__init__(target.config.vocab_size, trimmed_head(target, weights.pop("token_counts"), vocab))
        self.target = target
        self.config = target.config
        self.fc = native.pack_weight(weights.pop("fc.weight").float())
        self.layer = Layer.from_weights(weights, "layer.")
        self.cache = KVCache(replace(self.config, num_layers=1), num_slots, max_len)
        self._fed: dict[Sequence, int] = {}
        """Pairs fed with true features (positions 0..fed-1 of the head's cache)."""
        self._features: dict[Sequence, list[torch.Tensor]] = {}
        """True features verified since, for positions fed.. onwards."""
        self._guess: dict[Sequence, torch.Tensor] = {}
        """The head's last predicted feature, input of the next draft round."""

    def on_verified(self, seqs: Seq[Sequence], features: Seq[torch.Tensor] | None) -> None:
        assert features is not None
        for seq, f in zip(seqs, features):
            self._features.setdefault(seq, []).append(self.target.final_norm(f.contiguous()))

    def _catch_up(self, seqs: Seq[Sequence]) -> torch.Tensor:
        feats, tokens, positions, slots, last = [], [], [], [], []
        for seq in seqs:
            start, end = self._fed.get(seq, 0), len(seq.token_ids) - 1
            f = torch.cat(self._features.pop(seq))
            assert f.shape[0] == end - start, "features out of step with the sequence"
            feats.append(f)
            tokens += seq.token_ids[start + 1 :]
            positions += range(start, end)
            slots += [seq.slot] * (end - start)
            last.append(len(tokens) - 1)
            self._fed[seq] = end
        return self._forward(seqs, torch.cat(feats), tokens, positions, slots, torch.tensor(last))

    def _extend(self, seqs: Seq[Sequence], tokens: Seq[int], positions: Seq[int]) -> torch.Tensor:
        feats = torch.stack([self._guess[s] for s in seqs])
        return self._forward(seqs, feats, list(tokens), [p - 1 for p in positions], [s.slot for s in seqs], None)

    def _forward(
        self, seqs: Seq[Sequence], feats: torch.Tensor, tokens: list[int], positions: list[int], slots: list[int], rows: torch.Tensor | None
    ) -> torch.Tensor:
        x = torch.cat([feats, self.target.embed(torch.tensor(tokens))], dim=1).contiguous()
        x = native.linear(x, self.fc)
        run_layers(self.config, [self.layer], x, torch.tensor(positions), torch.tensor(slots), self.cache, [0], self.target.rope)
        if rows is not None:
            x = x[rows].contiguous()
        for seq, guess in zip(seqs, x):
            self._guess[seq] = guess
        return self.target.project(x, self.head)

    def release(self, seq: Sequence) -> None:
        for state in (self._fed, self._features, self._guess):
            state.pop(seq, None)
