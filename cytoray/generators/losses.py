"""Adversarial targets and losses (BCE on logits), with the paper's stabilisers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_targets(
    like: torch.Tensor,
    real: bool,
    smooth_real_low: float = 1.0,
    smooth_fake_high: float = 0.0,
    flip_rate: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Discriminator targets shaped like `like` (a logits map).

    Label smoothing: real ~ U[smooth_real_low, 1], fake ~ U[0, smooth_fake_high], one value
    per sample. Label flipping: each sample's target is swapped (real↔fake range) with
    probability `flip_rate`. Used for discriminator updates only (paper §3.4).
    """
    b = like.shape[0]
    u = torch.rand(b, generator=generator)
    lo_real = torch.full((b,), smooth_real_low) + u * (1.0 - smooth_real_low)
    hi_fake = u * smooth_fake_high
    is_real = torch.full((b,), real, dtype=torch.bool)
    if flip_rate > 0:
        is_real ^= torch.rand(b, generator=generator) < flip_rate
    t = torch.where(is_real, lo_real, hi_fake)
    return t.to(like.device, like.dtype).view(b, *([1] * (like.dim() - 1))).expand_as(like)


def bce(logits: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    if not torch.is_tensor(target):
        target = torch.full_like(logits, float(target))
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())
