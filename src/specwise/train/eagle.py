"""Training an EAGLE-style head on the target's own features.

Pair i is (feature at i, embedding of token i + 1); the head predicts the
feature at i + 1. The loss is EAGLE's: smooth-L1 on the feature plus 0.1 x
cross-entropy of the target's LM head on the predicted feature against the
target's own next-token choice (on the answers, which the target decoded
greedily, so the next token is that choice and costs no extra LM-head pass). A second pass feeds the head its own
predictions (as it will be fed while drafting several tokens) so that later
draft positions are trained too. Cross-entropy runs over the most frequent
tokens only, which is where the drafts come from and keeps training cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq

import torch
import torch.nn.functional as F
from torch import nn

from specwise.models.config import ModelConfig
from specwise.train.collect import Sample
from specwise.train.loop import answer_labels, fit
from specwise.train.torch_llama import TorchLayer, rope_tables

CE_WEIGHT = 0.1


class EagleHead(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * c.hidden_size, c.hidden_size, bias=False)
        self.layer = TorchLayer(c)

    def forward(self, feats: torch.Tensor, embeds: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return self.layer(self.fc(torch.cat([feats, embeds], dim=-1)), cos, sin)

    def export(self, token_counts: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weights ``save_eagle`` writes (fp16: half the size, and drafts do not
        need more precision; the target verifies in fp32)."""
        out = {"fc.weight": self.fc.weight.detach().float(), **self.layer.hf_state("layer."), "token_counts": token_counts}
        return {k: (v.half() if v.is_floating_point() else v) for k, v in out.items()}


def train_eagle(
    config: ModelConfig,
    head: torch.Tensor,
    samples: Seq[Sample],
    *,
    epochs: int = 2,
    lr: float = 1e-3,
    ce_vocab: int = 8192,
    tokens_per_batch: int = 4096,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, torch.Tensor]:
    """``head`` [V, H]: the target's (tied) LM head / embedding. The head starts
    from random weights (starting from the target's last layer was tried: its
    outputs are far larger than the features, and the loss started 5x higher)."""
    torch.manual_seed(seed)
    labels = answer_labels(samples, head, ce_vocab)
    model = EagleHead(config)
    lengths = [s.features.shape[0] for s in samples]
    cos, sin = rope_tables(config, max(lengths))

    def loss_fn(batch: list[int]) -> tuple[torch.Tensor, str]:
        t = max(lengths[i] for i in batch)
        feats = torch.zeros(len(batch), t, config.hidden_size)
        toks = torch.zeros(len(batch), t, dtype=torch.int64)
        tgt_labels = torch.full((len(batch), t), -100, dtype=torch.int64)
        mask = torch.zeros(len(batch), t, dtype=torch.bool)
        for row, i in enumerate(batch):
            n = lengths[i]
            feats[row, :n] = samples[i].features.float()
            toks[row, :n] = samples[i].tokens[1 : n + 1]
            tgt_labels[row, : n - 1] = labels.per_sample[i][1:n]
            mask[row, : n - 1] = True
        target = torch.cat([feats[:, 1:], feats[:, :1]], dim=1)  # feature i + 1 (row n-1 masked)
        scored = tgt_labels >= 0
        embeds = head[toks]
        c, s = cos[:t], sin[:t]
        out1 = model(feats, embeds, c, s)
        out2 = model(torch.cat([feats[:, :1], out1[:, :-1]], dim=1), embeds, c, s)
        loss, parts = torch.zeros(()), []
        for out in (out1, out2):
            reg = F.smooth_l1_loss(out[mask], target[mask])
            ce = F.cross_entropy(out[scored] @ labels.head.T, tgt_labels[scored])
            loss = loss + reg + CE_WEIGHT * ce
            parts += [reg.item(), ce.item()]
        return loss, f"reg {parts[0]:.4f}/{parts[2]:.4f} ce {parts[1]:.3f}/{parts[3]:.3f}"

    fit(model, lengths, loss_fn, epochs=epochs, lr=lr, tokens_per_batch=tokens_per_batch, seed=seed, log=log)
    return model.export(labels.counts)
