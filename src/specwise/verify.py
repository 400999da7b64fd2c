"""Lossless verification of drafted tokens against the target.

Pure functions over tensors. Both return (number of drafts accepted, the next
token): the recovered token at the first rejection, or the bonus token when
every draft was accepted.
"""

from __future__ import annotations

import torch

from specwise.sampling import sample


def verify_greedy(target_logits: torch.Tensor, draft: torch.Tensor) -> tuple[int, int]:
    """Accept while the target's argmax equals the draft.

    target_logits: [k + 1, V]; draft: int64 [k].
    """
    argmax = target_logits.argmax(dim=-1)  # [k + 1]
    k = draft.shape[0]
    mismatch = (argmax[:k] != draft).nonzero()
    n = int(mismatch[0]) if mismatch.numel() else k
    return n, int(argmax[n])


def verify_stochastic(
    target_probs: torch.Tensor,
    draft: torch.Tensor,
    draft_probs: torch.Tensor | None,
    generator: torch.Generator | None,
) -> tuple[int, int]:
    """Rejection sampling (Leviathan et al. 2023; Chen et al. 2023).

    target_probs: [k + 1, V]; draft: int64 [k]; draft_probs: [k, V], or None for a
    deterministic drafter (q one-hot on the draft token). Draft i is accepted
    with probability min(1, p(x) / q(x)); at the first rejection the next token
    is drawn from max(0, p - q) renormalised, so every emitted token follows p.
    """
    k = draft.shape[0]
    n = first_rejection(target_probs, draft, draft_probs, generator)
    if n is None:
        return k, sample(target_probs[k], generator)
    if draft_probs is not None:
        residual = (target_probs[n] - draft_probs[n]).clamp_(min=0)
    else:
        residual = target_probs[n].clone()
        residual[draft[n]] = 0
    # A rejection has probability 0 when the residual is empty, so this sum is > 0.
    return n, sample(residual / residual.sum(), generator)


def first_rejection(
    target_probs: torch.Tensor, draft: torch.Tensor, draft_probs: torch.Tensor | None, generator: torch.Generator | None
) -> int | None:
    """Index of the first draft rejected by the accept test u < p(x) / q(x), or None."""
    k = draft.shape[0]
    rows = torch.arange(k)
    p = target_probs[rows, draft]  # [k]
    q = draft_probs[rows, draft] if draft_probs is not None else torch.ones(k)
    u = torch.rand(k, generator=generator)
    rejected = (u * q > p).nonzero()
    return int(rejected[0]) if rejected.numel() else None
