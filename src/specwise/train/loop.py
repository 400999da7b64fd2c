"""What every draft trainer shares: answer labels, the scored vocabulary,
length-bucketed batches, and the optimisation loop (AdamW, warmup then
cosine decay, gradient clipping)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass

import torch
from torch import nn

from specwise.train.collect import Sample


@dataclass(slots=True)
class Labels:
    counts: torch.Tensor
    """How often the target chose each token: the draft vocabulary's ranking."""
    head: torch.Tensor
    """The LM head rows of the scored vocabulary (cross-entropy runs over these only)."""
    per_sample: list[torch.Tensor]
    """Per sample and position j: the index in the scored vocabulary of the token at
    j + 1 where it is the target's own greedy choice (the answer), else -100 (prompt
    text is not the target's, and rare tokens are not scored)."""


def answer_labels(samples: Seq[Sample], head: torch.Tensor, ce_vocab: int) -> Labels:
    """The answers were decoded greedily, so their next token is the target's
    choice and costs no extra LM-head pass."""
    counts = torch.bincount(torch.cat([s.tokens[s.num_prompt :] for s in samples]), minlength=head.shape[0])
    top = torch.argsort(counts, descending=True, stable=True)[:ce_vocab]
    remap = torch.full((head.shape[0],), -100, dtype=torch.int64)
    remap[top] = torch.arange(top.shape[0])
    per_sample = []
    for s in samples:
        labels = remap[s.tokens[1:]]
        labels[: s.num_prompt - 1] = -100
        per_sample.append(labels)
    return Labels(counts, head[top].contiguous(), per_sample)


def batches(lengths: list[int], tokens_per_batch: int, rng: random.Random) -> list[list[int]]:
    """Samples of similar length together (little padding), in shuffled order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out, cur, longest = [], [], 0
    for i in order:
        longest = max(longest, lengths[i])
        if cur and longest * (len(cur) + 1) > tokens_per_batch:
            out.append(cur)
            cur, longest = [], lengths[i]
        cur.append(i)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def fit(
    model: nn.Module,
    lengths: list[int],
    loss_fn: Callable[[list[int]], tuple[torch.Tensor, str]],
    *,
    epochs: int,
    lr: float,
    tokens_per_batch: int,
    seed: int,
    log: Callable[[str], None],
) -> None:
    """Train ``model`` on batches of sample indices; ``loss_fn`` gives a batch's loss
    and a line to log."""
    rng = random.Random(seed)
    steps = epochs * len(batches(lengths, tokens_per_batch, random.Random(0)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = min(50, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    step = 0
    for epoch in range(epochs):
        for batch in batches(lengths, tokens_per_batch, rng):
            loss, line = loss_fn(batch)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 20 == 0 or step == steps:
                log(f"epoch {epoch + 1} step {step}/{steps}: {line}")
