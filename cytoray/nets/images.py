"""Images between numpy and networks: uint8 [N,H,W,3] <-> float [N,3,H,W] in [-1, 1], and a
U-Net input padded to its stride."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_unit(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,3] → float32 [N,3,H,W] in [-1, 1]."""
    return (images_uint8.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0).copy()


def from_unit(x: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] in [-1, 1] → uint8 [N,H,W,3]."""
    return (
        ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5)
        .round()
        .byte()
        .permute(0, 2, 3, 1)
        .numpy()
    )


def pad_to(x: torch.Tensor, k: int) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad H and W up to multiples of k (a U-Net's input); returns the original H, W."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % k, (-w) % k
    return (F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x), h, w
