"""SynCGAN (Dey et al.): class-specific mask GANs feed a mask → RGB conditional GAN.

1. Nucleus masks of the real training/validation images (unsupervised, §3.2; or the
   simulator's ground truth when asked).
2. One mask GAN per class, z → mask, with label smoothing and flipping (§3.4).
3. One CGAN, mask → RGB, on (mask, image) pairs of all classes; best epoch by validation
   generator loss (§3.3, §4.1).
4. `sample(n, cls)` = CGAN(mask_gan[cls](z)) (eq. 7): images and the masks that made them.
All three stages train in one Ray Train job; a stage whose settings and data are unchanged
(e.g. the mask GANs of a trial that only changes λ) comes from the stage cache.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch

from ..data.folder import ImageSet
from ..io import stable_hash
from ..masks.config import MasksConfig, cache_identity, dataset_masks
from ..masks.segmenter import pinned
from ..nets import MaskGenerator, UNet
from ..training.stage import StageSpec
from .base import Generator, GeneratorConfig
from .bundle import load_per_class, load_state, read_bundle
from .gan import CGANConfig, CGANStage, LatentGANConfig, MaskGANStage, from_unit, masks_to_unit, seeded_z, stage_params, to_unit


@dataclasses.dataclass
class SynCGANConfig(GeneratorConfig):
    """SynCGAN's own settings (keys and reasons: configs/models/syncgan.yaml)."""

    name: str = "syncgan"
    masks: MasksConfig = dataclasses.field(default_factory=MasksConfig)
    mask_gan: LatentGANConfig = dataclasses.field(default_factory=LatentGANConfig)
    cgan: CGANConfig = dataclasses.field(default_factory=CGANConfig)


def nucleus_masks(ds: ImageSet, masks: MasksConfig) -> np.ndarray:
    """Masks that prime the CGAN: unsupervised (stain-aware by default; the paper's §3.2 method with
    masks.method=syncgan) or the dataset's ground truth; padding bands never hold a nucleus."""
    return dataset_masks(ds, masks)


def masks_key(masks: MasksConfig) -> str:
    """Every mask setting (a segmenter's content hash included) and the mask algorithm's version,
    hashed: masks made another way are other training data (the split's hash already covers the
    images and how they were loaded)."""
    from ..masks.run import ALGORITHM_VERSION

    return stable_hash({**cache_identity(masks), "algorithm": ALGORITHM_VERSION}, 8)


class SynCGAN(Generator):
    name, Config = "syncgan", SynCGANConfig

    def __init__(self, cgan: UNet, mask_gans: dict[str, MaskGenerator], meta: dict) -> None:
        self.cgan, self.mask_gans, self.meta = cgan.eval(), {k: g.eval() for k, g in mask_gans.items()}, meta
        self.classes = list(meta["classes"])

    # -- training ---------------------------------------------------------------
    @classmethod
    def bundle_key(cls, cfg: SynCGANConfig, data_key: str, seed: int) -> str:
        """The config's hash plus what its masks are (a segmenter named by an alias may change)."""
        return super().bundle_key(cfg, f"{data_key}:masks={masks_key(cfg.masks)}", seed)

    @classmethod
    def stages(cls, train: ImageSet, val: ImageSet, cfg: SynCGANConfig, data_key: str, seed: int) -> list[StageSpec]:
        size = int(train.images.shape[1])
        method = f"{cfg.masks.method} {cfg.masks.segmenter}" if cfg.masks.segmenter else cfg.masks.method
        print(f"[syncgan] nucleus masks ({cfg.masks.source}, {method}) for {len(train)} train + {len(val)} val images",
              file=sys.stderr, flush=True)  # fmt: skip
        masks = pinned(cfg.masks)  # an alias resolved once: both mask sets and their key name one segmenter version
        m_train, m_val = nucleus_masks(train, masks), nucleus_masks(val, masks)
        mkey = f"{data_key}:masks={masks_key(masks)}"
        mp = stage_params(cfg.mask_gan, size)
        specs = [
            StageSpec(f"mask_gan/{c}", MaskGANStage(mp), train={"mask": masks_to_unit(m_train[train.labels == i])}, val=None,
                      fixed={"z": seeded_z(16, mp["z_dim"], 1234)}, data_key=f"{mkey}:{c}", seed=seed)
            for i, c in enumerate(train.class_names)
        ]  # fmt: skip
        fixed_idx = np.arange(min(8, len(val)))
        specs.append(StageSpec(
            "cgan", CGANStage(stage_params(cfg.cgan, size)),
            train={"mask": masks_to_unit(m_train), "image": to_unit(train.images)},
            val={"mask": masks_to_unit(m_val), "image": to_unit(val.images)},
            fixed={"mask": masks_to_unit(m_val[fixed_idx]), "image": to_unit(val.images[fixed_idx])},
            data_key=mkey, seed=seed,
        ))  # fmt: skip
        return specs

    @classmethod
    def assemble(cls, train: ImageSet, cfg: SynCGANConfig, results: dict, data_key: str):
        meta = {
            "classes": list(train.class_names),
            "size": int(train.images.shape[1]),
            "mask_source": cfg.masks.source,
            "cgan": {"kwargs": results["cgan"].meta["generator_kwargs"], "best_epoch": results["cgan"].meta["best_epoch"]},
            "mask_gans": {c: {"kwargs": results[f"mask_gan/{c}"].meta["generator_kwargs"]} for c in train.class_names},
        }
        states = {"cgan": results["cgan"].best_state()}
        states.update({f"mask_gan_{c}": results[f"mask_gan/{c}"].best_state() for c in train.class_names})
        return meta, states, {}

    # -- sampling ---------------------------------------------------------------
    @classmethod
    def load(cls, path) -> "SynCGAN":
        meta, path = read_bundle(path)
        cgan = UNet(**meta["cgan"]["kwargs"])
        cgan.load_state_dict(load_state(path, "cgan"))
        return cls(cgan, load_per_class(path, meta["mask_gans"], MaskGenerator, "mask_gan_"), meta)

    @torch.no_grad()
    def sample(self, n: int, cls: str, seed: int = 0, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """n synthetic images of class `cls` (uint8 [n,S,S,3]) and their masks (bool [n,S,S])."""
        self.check_class(cls)
        g = torch.Generator().manual_seed(seed)
        imgs, masks = [], []
        for start in range(0, n, batch):
            k = min(batch, n - start)
            z = torch.randn(k, self.mask_gans[cls].z_dim, generator=g)
            m = torch.tanh(self.mask_gans[cls](z)) > 0  # binary mask, eq. 7's G_GAN(z)
            x = self.cgan(m.float() * 2 - 1)  # G_CGAN(mask)
            imgs.append(from_unit(x))
            masks.append(m[:, 0].numpy())
        return np.concatenate(imgs), np.concatenate(masks)
