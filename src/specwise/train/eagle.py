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

import math
import random
from collections.abc import Callable, Sequence as Seq

import torch
import torch.nn.functional as F
from torch import nn

from specwise.models.config import ModelConfig
from specwise.train.collect import Sample
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


def answer_labels(sample: Sample, remap: torch.Tensor) -> torch.Tensor:
    """Per position j, the (remapped) token at j + 1 where that token is the
    target's own greedy choice (the answer), else -100 (prompt text is not the
    target's, and tokens outside the trained vocabulary are not scored)."""
    labels = remap[sample.tokens[1:]]
    labels[: sample.num_prompt - 1] = -100
    return labels


def token_counts(samples: Seq[Sample], vocab_size: int) -> torch.Tensor:
    """How often the target chose each token: the draft vocabulary's ranking."""
    return torch.bincount(torch.cat([s.tokens[s.num_prompt :] for s in samples]), minlength=vocab_size)


def ce_vocabulary(counts: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the ``size`` most chosen ids, a map from id to their index or -100)."""
    top = torch.argsort(counts, descending=True, stable=True)[:size]
    remap = torch.full((counts.shape[0],), -100, dtype=torch.int64)
    remap[top] = torch.arange(top.shape[0])
    return top, remap


def _batches(lengths: list[int], tokens_per_batch: int, rng: random.Random) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur, longest = [], [], 0
    for i in order:
        longest = max(longest, lengths[i])
        if cur and longest * (len(cur) + 1) > tokens_per_batch:
            batches.append(cur)
            cur, longest = [], lengths[i]
        cur.append(i)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


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
    rng = random.Random(seed)
    counts = token_counts(samples, config.vocab_size)
    top, remap = ce_vocabulary(counts, ce_vocab)
    labels = [answer_labels(s, remap) for s in samples]
    ce_head = head[top].contiguous()
    model = EagleHead(config)
    lengths = [s.features.shape[0] for s in samples]
    cos, sin = rope_tables(config, max(lengths))
    steps = epochs * len(_batches(lengths, tokens_per_batch, random.Random(0)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = min(50, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    step = 0
    for epoch in range(epochs):
        for batch in _batches(lengths, tokens_per_batch, rng):
            t = max(lengths[i] for i in batch)
            feats = torch.zeros(len(batch), t, config.hidden_size)
            toks = torch.zeros(len(batch), t, dtype=torch.int64)
            tgt_labels = torch.full((len(batch), t), -100, dtype=torch.int64)
            mask = torch.zeros(len(batch), t, dtype=torch.bool)
            for row, i in enumerate(batch):
                n = lengths[i]
                feats[row, :n] = samples[i].features.float()
                toks[row, :n] = samples[i].tokens[1 : n + 1]
                tgt_labels[row, : n - 1] = labels[i][1:n]
                mask[row, : n - 1] = True
            target = torch.cat([feats[:, 1:], feats[:, :1]], dim=1)  # feature i + 1 (row n-1 masked)
            embeds = head[toks]
            c, s = cos[:t], sin[:t]
            out1 = model(feats, embeds, c, s)
            out2 = model(torch.cat([feats[:, :1], out1[:, :-1]], dim=1), embeds, c, s)
            loss, parts = 0.0, []
            for out in (out1, out2):
                reg = F.smooth_l1_loss(out[mask], target[mask])
                scored = tgt_labels >= 0
                ce = F.cross_entropy(out[scored] @ ce_head.T, tgt_labels[scored])
                loss = loss + reg + CE_WEIGHT * ce
                parts += [reg.item(), ce.item()]
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 20 == 0 or step == steps:
                log(f"epoch {epoch + 1} step {step}/{steps}: reg {parts[0]:.4f}/{parts[2]:.4f} ce {parts[1]:.3f}/{parts[3]:.3f}")
    return model.export(counts)
