"""Traditional augmentation (SynCGAN Tab. 2 "Trad"): flips, rotation, Gaussian noise.

Two uses, one set of settings (`AugmentConfig`):

- offline, on uint8 HWC numpy images: `traditional_copies` makes N augmented copies of the
  real training images. The `trad` policy uses this, at the same copies:real ratio as the
  synthetic policies (ratio 2 → 90 copies per class beside 45 real), so "Orig+Trad" and
  "Orig+Prop" train on sets of the same size and differ only in where the extra images come
  from. Masks, when given, go through the same geometry (MONAI dictionary style,
  `augment_pair`), so a copy's mask still outlines its nuclei.
- online, on float NCHW device tensors inside the training loop: `augment_batch` draws
  per-sample flips/rotations as one affine matrix each and applies them with a single
  `grid_sample` call, then adds noise: no per-sample Python work on the hot path.

Geometry order (both paths): horizontal flip, vertical flip, k·90° rotation, small rotation.
Noise touches images only, never masks. Everything random comes from the caller's seeded
generator (`np.random.Generator` offline, `torch.Generator` online).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .config import AugmentConfig

# ----------------------------------------------------------------------------- offline (numpy)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """One draw of the geometric part of an augmentation, applied identically to image and mask."""

    hflip: bool = False
    vflip: bool = False
    k90: int = 0  # counter-clockwise quarter turns
    angle: float = 0.0  # extra counter-clockwise rotation in degrees

    def apply(self, arr: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Transform an HW or HWC array; `nearest` for masks/labels (no new values)."""
        out = arr
        if self.hflip:
            out = out[:, ::-1]
        if self.vflip:
            out = out[::-1]
        if self.k90:
            out = np.rot90(out, self.k90, axes=(0, 1))
        if self.angle:
            # reflect padding: black corners would be a cue no real image has
            out = ndimage.rotate(
                out,
                self.angle,
                axes=(1, 0),
                reshape=False,
                order=0 if nearest else 1,
                mode="reflect",
            )
        return np.ascontiguousarray(out)


def draw_geometry(rng: np.random.Generator, cfg: AugmentConfig) -> Geometry:
    """Draw flips/rotation in a fixed order (so a seed always gives the same sequence)."""
    hflip = bool(rng.random() < cfg.hflip)
    vflip = bool(rng.random() < cfg.vflip)
    k90 = int(rng.integers(0, 4)) if cfg.rot90 else 0
    angle = float(rng.uniform(-cfg.max_angle, cfg.max_angle)) if cfg.max_angle > 0 else 0.0
    return Geometry(hflip, vflip, k90, angle)


def add_noise(img: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """uint8 image + N(0, (std·255)²), rounded and clipped back to uint8."""
    if std <= 0:
        return img
    noisy = img.astype(np.float32) + rng.normal(0.0, std * 255.0, img.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def augment_pair(
    sample: dict[str, np.ndarray],
    rng: np.random.Generator,
    cfg: AugmentConfig | None = None,
    image_keys: Sequence[str] = ("image",),
    mask_keys: Sequence[str] = ("mask",),
) -> dict[str, np.ndarray]:
    """Augment a dict of arrays with one geometry draw (MONAI dictionary-transform style).

    Images (`image_keys`, uint8 HWC) get bilinear geometry then noise; masks (`mask_keys`,
    HW) get the same geometry with nearest sampling and no noise. Missing/None keys are skipped;
    other keys pass through unchanged.
    """
    cfg = cfg or AugmentConfig()
    geo = draw_geometry(rng, cfg)
    out = dict(sample)
    for k in mask_keys:
        if out.get(k) is not None:
            dtype = out[k].dtype
            out[k] = geo.apply(out[k].astype(np.uint8), nearest=True).astype(dtype)
    for k in image_keys:
        if out.get(k) is not None:
            out[k] = add_noise(geo.apply(out[k]), rng, cfg.noise_std)
    return out


def traditional_copies(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    n_per_image: int | None = None,
    n_total: int | None = None,
    masks: np.ndarray | None = None,
    cfg: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Augmented copies of uint8 [N,H,W,3] images: `n_per_image` each, or `n_total` spread evenly.

    With `n_total`, every image is used floor(n_total/N) times and a random subset once more.
    Returns (copies uint8 [M,H,W,3], their masks or None, source index [M] into `images`).
    """
    if (n_per_image is None) == (n_total is None):
        raise ValueError("give exactly one of n_per_image or n_total")
    n = len(images)
    m = n * int(n_per_image) if n_per_image is not None else int(n_total)
    if m < 0:
        raise ValueError(f"cannot make {m} copies")
    if m and not n:
        raise ValueError("no images to copy")
    src = (
        np.repeat(np.arange(n), n_per_image)
        if n_per_image is not None
        else rng.permutation(n)[np.arange(m) % max(n, 1)]
    )
    src = np.sort(src, kind="stable")  # copies of one image side by side: easier to look at
    out = np.empty((m, *images.shape[1:]), np.uint8)
    out_m = None if masks is None else np.empty((m, *masks.shape[1:]), masks.dtype)
    for j, i in enumerate(src):
        res = augment_pair(
            {"image": images[i], "mask": None if masks is None else masks[i]}, rng, cfg
        )
        out[j] = res["image"]
        if out_m is not None:
            out_m[j] = res["mask"]
    return out, out_m, src


# ----------------------------------------------------------------------------- online (torch)


def batch_theta(
    b: int, gen: torch.Generator, cfg: AugmentConfig, device: torch.device
) -> torch.Tensor:
    """Per-sample affine matrices [B,2,3] (output → input coordinates) for flips and rotations."""
    u = torch.rand(b, 3, generator=gen, device=device)
    sx = torch.where(u[:, 0] < cfg.hflip, -1.0, 1.0)
    sy = torch.where(u[:, 1] < cfg.vflip, -1.0, 1.0)
    k = (
        torch.randint(0, 4, (b,), generator=gen, device=device)
        if cfg.rot90
        else torch.zeros(b, device=device)
    )
    a = (u[:, 2] * 2 - 1) * math.radians(cfg.max_angle)
    t = k.float() * (math.pi / 2) + a
    cos, sin = torch.cos(t), torch.sin(t)
    # Snap the quarter-turn values so 90° rotations are exact permutations of pixels.
    cos, sin = [torch.where(v.abs() < 1e-6, torch.zeros_like(v), v) for v in (cos, sin)]
    theta = torch.zeros(b, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, -sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, cos * sy
    return theta


def augment_batch(
    x: torch.Tensor,
    gen: torch.Generator,
    cfg: AugmentConfig | None = None,
    mask: torch.Tensor | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Randomly flip/rotate (and add noise to) a float batch [B,C,H,W] on its own device.

    `gen` must live on `x.device`. A `mask` [B,1,H,W] gets the same geometry (nearest, no
    noise) and the pair is returned. Noise std is `cfg.noise_std` of the `value_range` span.
    """
    cfg = cfg or AugmentConfig()
    b = x.shape[0]
    # 1. One affine matrix per sample; one grid_sample for the whole batch.
    theta = batch_theta(b, gen, cfg, x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # 2. Noise on the image only, clipped to the valid range.
    if cfg.noise_std > 0:
        lo, hi = value_range
        noise = torch.randn(out.shape, generator=gen, device=x.device, dtype=out.dtype)
        out = (out + noise * (cfg.noise_std * (hi - lo))).clamp_(lo, hi)
    if mask is None:
        return out
    m = F.grid_sample(
        mask.float(), grid, mode="nearest", padding_mode="reflection", align_corners=False
    )
    return out, m.to(mask.dtype)
