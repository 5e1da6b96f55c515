"""Where a map-conditioned generator's label maps come from when it samples (`prior`).

SynCGAN's CGAN and the diffusion generator both draw an image from a label map (or a nucleus mask);
what differs between them is the map → image step. The maps come from one of two priors:

  - `gan` (SynCGAN's eq. 7): one mask GAN per class, z → map; the bundle holds its weights;
  - `bank`: one of the class's training maps under a random symmetry, rotation, scale and elastic
    warp (masks/warp.py); no mask GAN is trained and the bundle holds the packed training maps
    (not the images). On Herlev (64 px) the mask GANs' maps cost SynCGAN's cells half of their
    distance to real ones (benchmarks/generators_real_herlev.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..data.folder import ImageSet
from ..errors import ConfigError
from ..masks.warp import pack_maps, unpack_maps, warp_label_maps

PRIORS = ("gan", "bank")


def check_prior(prior: str, warp: float) -> None:
    """The `prior` and `warp` keys of a map-conditioned generator's config."""
    if prior not in PRIORS:
        raise ConfigError(f"prior={prior!r}: use one of {', '.join(PRIORS)}")
    if not 0.0 <= warp <= 0.25:
        raise ConfigError(
            f"warp={warp}: the elastic shift is a share of the image size in [0, 0.25]"
        )


def bank(train: ImageSet, maps: np.ndarray) -> dict:
    """Each class's training label maps (or masks), packed for the bundle's meta (prior: bank)."""
    return {c: pack_maps(maps[train.labels == i]) for i, c in enumerate(train.class_names)}


def bank_meta(
    stage_meta: dict, train: ImageSet, maps: Callable[[], np.ndarray], warp: float
) -> dict:
    """The bundle's `bank` and `warp` (prior bank): the bank its stage packed, or, for a stage cached
    by a run with the GAN prior (which packed none), the training maps `maps()` made again."""
    return {"bank": stage_meta.get("bank") or bank(train, maps()), "warp": warp}


def draw_from_bank(
    maps: np.ndarray, b: int, rng: np.random.Generator, warp: float = 0.06
) -> np.ndarray:
    """b maps drawn from one class's training maps, each under its own warp (masks/warp.py)."""
    return warp_label_maps(maps[rng.integers(len(maps), size=b)], rng, elastic=warp)


class MapPrior:
    """Draws a class's label maps from a bundle: its mask GANs (prior gan) or its bank of training
    maps, each under its own warp (prior bank: the meta's `bank` and `warp`)."""

    def __init__(self, meta: dict, mask_gans: dict) -> None:
        self.meta, self.mask_gans = meta, mask_gans
        self._bank: dict[str, np.ndarray] = {}

    def draw(
        self, cls: str, b: int, labels: int, g: torch.Generator, rng: np.random.Generator
    ) -> np.ndarray:
        """b maps [b,S,S] of class `cls`: uint8 labels, or bool masks for a one-channel prior
        (`labels` 1). A mask GAN's z comes from the torch generator `g`, a warp from `rng`."""
        if cls not in self.mask_gans:
            maps = self._bank.setdefault(cls, unpack_maps(self.meta["bank"][cls]))
            return draw_from_bank(maps, b, rng, float(self.meta.get("warp", 0.06)))
        gan = self.mask_gans[cls]
        logits = gan(torch.randn(b, gan.z_dim, generator=g))
        if labels == 1 or logits.shape[1] == 1:
            return (logits > 0)[:, 0].numpy()  # binary mask, eq. 7's G_GAN(z)
        return logits.argmax(1).numpy().astype(np.uint8)  # the label map
