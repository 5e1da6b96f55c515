"""New label maps from a class's real ones: a random symmetry, rotation, scale and elastic warp.

SynCGAN draws a class's label maps from a mask GAN trained on that class's 45-75 maps. On Herlev
(64 px, 60 epochs) the normal class's mask GAN collapsed onto a few layouts, and its maps cost the
synthetic cells about half of their distance to real ones (benchmarks/generators_real_herlev.md:
the same CGAN given the real training maps scored KID 0.053 / 0.072 against held-out cells, given
the GAN's maps 0.121 / 0.132). `syncgan.prior: bank` draws a map from the class's training maps
instead and moves it away from the one it came from:

  - one of the 8 symmetries of the square (a slide has no up or left), a rotation by any angle
    and a scale in [1 - scale, 1 + scale] about the centre;
  - an elastic displacement: white noise smoothed by a Gaussian of `smooth` x the size, scaled so
    its largest shift is `elastic` x the size (Simard et al. 2003's elastic distortion), which bends
    the outlines of the cell and its nucleus rather than moving them whole.

Each label's indicator is resampled bilinearly and the map is their argmax, so outlines stay
smooth (nearest-neighbour resampling would make them jagged). Pixels that come from outside the
image take the nearest edge's label: a cell body cut by the crop stays cut.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates


def warp_label_maps(
    maps: np.ndarray,
    rng: np.random.Generator,
    *,
    elastic: float = 0.06,
    scale: float = 0.1,
    smooth: float = 0.12,
) -> np.ndarray:
    """Each map of `maps` [N, H, W] (label ints, or bool masks) under its own random warp; the same
    dtype back."""
    if maps.ndim != 3:
        raise ValueError(f"label maps of shape [N, H, W] expected, got {maps.shape}")
    n, h, w = maps.shape
    labels = np.arange(max(int(maps.max(initial=0)) + 1, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = np.empty_like(maps)
    for i in range(n):
        m = np.rot90(maps[i], int(rng.integers(4)))
        m = m[:, ::-1] if rng.random() < 0.5 else m
        theta, s = rng.uniform(0, 2 * np.pi), 1 + rng.uniform(-scale, scale)
        shift = [
            gaussian_filter(rng.standard_normal((h, w)), smooth * h, mode="wrap") for _ in range(2)
        ]
        peak = max(float(np.abs(shift[0]).max()), float(np.abs(shift[1]).max()), 1e-12)
        dy, dx = (d * (elastic * h / peak) for d in shift)
        # the source pixel of each output pixel: the inverse
        # rotation and scale about the centre, then the warp
        c, sn = np.cos(theta), np.sin(theta)
        src = [
            cy + ((yy - cy) * c + (xx - cx) * sn) / s + dy,
            cx + (-(yy - cy) * sn + (xx - cx) * c) / s + dx,
        ]
        votes = [
            map_coordinates((m == k).astype(np.float32), src, order=1, mode="nearest")
            for k in labels
        ]
        out[i] = labels[np.argmax(votes, axis=0)].astype(maps.dtype)
    return out


def pack_maps(maps: np.ndarray) -> dict:
    """Label maps as a JSON-able dict (zlib-compressed uint8, base64): a bundle's meta holds them."""
    a = np.ascontiguousarray(maps, dtype=np.uint8)
    return {
        "shape": list(a.shape),
        "bool": bool(maps.dtype == bool),
        "zlib": base64.b64encode(zlib.compress(a.tobytes(), 6)).decode(),
    }


def unpack_maps(d: dict) -> np.ndarray:
    a = np.frombuffer(zlib.decompress(base64.b64decode(d["zlib"])), dtype=np.uint8).reshape(
        d["shape"]
    )
    return a.astype(bool) if d.get("bool") else a.copy()
