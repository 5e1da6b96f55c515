"""SynCGAN (Dey et al.): class-specific mask GANs feed a mask → RGB conditional GAN.

1. Nucleus masks of the real training/validation images (unsupervised, §3.2; or the
   simulator's ground truth when asked).
2. One mask GAN per class, z → mask, with label smoothing and flipping (§3.4).
3. One CGAN, mask → RGB, on (mask, image) pairs of all classes; best epoch by validation
   generator loss (§3.3, §4.1).
4. `sample(n, cls)` = CGAN(mask_gan[cls](z)) (eq. 7): images and the masks that made them.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from ..data.folder import ImageSet
from ..distributed.runner import StageResult, run_stage
from ..nets import MaskGenerator, UNet
from . import register
from .bundle import load_per_class, load_state, read_bundle, write_bundle
from .config import GeneratorTrainConfig


# ----------------------------------------------------------------------------- helpers


def to_unit(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,3] → float32 [N,3,H,W] in [-1, 1]."""
    return (images_uint8.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0).copy()


def masks_to_unit(masks: np.ndarray) -> np.ndarray:
    """bool [N,H,W] → float32 [N,1,H,W] in {-1, +1}."""
    return (masks[:, None].astype(np.float32) * 2.0 - 1.0).copy()


def from_unit(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def nucleus_masks(ds: ImageSet, source: str) -> np.ndarray:
    """Masks that prime the CGAN: unsupervised (paper §3.2) or the dataset's ground truth."""
    if source == "ground_truth":
        if ds.masks is None:
            from ..errors import DataError

            raise DataError(f"{ds.source}: masks.source=ground_truth but the dataset has no <class>/masks/ files; use masks.source=unsupervised")
        return ds.masks.astype(bool)
    from ..masks.unsupervised import nucleus_mask

    return np.stack([nucleus_mask(im) for im in ds.images])


def stage_params(cfg_section, size: int) -> dict:
    return {**dataclasses.asdict(cfg_section), "size": size}


def _seeded_z(n: int, z_dim: int, seed: int) -> np.ndarray:
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed)).numpy()


# ----------------------------------------------------------------------------- generator


@register("syncgan")
class SynCGAN:
    def __init__(self, cgan: UNet, mask_gans: dict[str, MaskGenerator], meta: dict) -> None:
        self.cgan, self.mask_gans, self.meta = cgan.eval(), {k: g.eval() for k, g in mask_gans.items()}, meta
        self.classes = list(meta["classes"])

    # -- training ---------------------------------------------------------------
    @staticmethod
    def train_stages(train: ImageSet, val: ImageSet, cfg: GeneratorTrainConfig, cache_root, data_key: str,
                     use_cache: bool = True) -> dict[str, StageResult]:
        size = int(train.images.shape[1])
        print(f"[syncgan] nucleus masks ({cfg.masks.source}) for {len(train)} train + {len(val)} val images", file=sys.stderr, flush=True)
        m_train, m_val = nucleus_masks(train, cfg.masks.source), nucleus_masks(val, cfg.masks.source)
        results: dict[str, StageResult] = {}
        mp = stage_params(cfg.mask_gan, size)
        for c, cls in enumerate(train.class_names):
            sel = train.labels == c
            results[f"mask_gan/{cls}"] = run_stage(
                "mask_gan", mp,
                train={"mask": masks_to_unit(m_train[sel])}, val=None,
                fixed={"z": _seeded_z(16, mp["z_dim"], 1234)},
                label=f"mask_gan-{cls}", data_key=f"{data_key}:{cfg.masks.source}:{cls}",
                cache_root=cache_root, run_cfg=cfg.run, use_cache=use_cache,
            )  # fmt: skip
        cp = stage_params(cfg.cgan, size)
        fixed_idx = np.arange(min(8, len(val)))
        results["cgan"] = run_stage(
            "cgan", cp,
            train={"mask": masks_to_unit(m_train), "image": to_unit(train.images)},
            val={"mask": masks_to_unit(m_val), "image": to_unit(val.images)},
            fixed={"mask": masks_to_unit(m_val[fixed_idx]), "image": to_unit(val.images[fixed_idx])},
            label="cgan", data_key=f"{data_key}:{cfg.masks.source}",
            cache_root=cache_root, run_cfg=cfg.run, use_cache=use_cache,
        )  # fmt: skip
        return results

    @classmethod
    def train(cls, train: ImageSet, val: ImageSet, cfg: GeneratorTrainConfig, out, cache_root, data_key: str,
              use_cache: bool = True) -> tuple[Path, dict]:
        res = cls.train_stages(train, val, cfg, cache_root, data_key, use_cache)
        meta = {
            "generator": "syncgan",
            "classes": list(train.class_names),
            "size": int(train.images.shape[1]),
            "data_key": data_key,
            "mask_source": cfg.masks.source,
            "cgan": {"kwargs": res["cgan"].meta["generator_kwargs"], "best_epoch": res["cgan"].meta["best_epoch"]},
            "mask_gans": {c: {"kwargs": res[f"mask_gan/{c}"].meta["generator_kwargs"]} for c in train.class_names},
        }
        states = {"cgan": res["cgan"].generator_state()}
        states.update({f"mask_gan_{c}": res[f"mask_gan/{c}"].generator_state() for c in train.class_names})
        grids = {k.replace("/", "_"): r.grids() for k, r in res.items()}
        return write_bundle(out, meta, states, {f"grids/{k}": v for k, v in grids.items()}), res

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
        from ..errors import CytorayError

        if cls not in self.mask_gans:
            raise CytorayError(f"class '{cls}' not in this generator (classes: {', '.join(self.classes)})")
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
