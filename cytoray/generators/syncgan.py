"""SynCGAN (Dey et al.): class-specific mask GANs feed a mask → RGB conditional GAN.

1. Nucleus masks of the real training/validation images (unsupervised, §3.2; or the
   simulator's ground truth when asked), and around them, by default (`masks.labels: cell`),
   label maps: glass / cytoplasm / nucleus (masks/labels.py). The paper's binary
   mask is `masks.labels: nucleus`.
2. The prior of the label maps (`prior`). `gan`, the paper's: one mask GAN per class, z → mask
   or label map, with label smoothing and flipping (§3.4). `bank`, the default: no mask GAN; a
   map is one of the class's training maps under a random symmetry, rotation, scale and elastic
   warp (masks/warp.py). On Herlev (64 px) the mask GANs' maps cost the synthetic cells half of
   their distance to real ones: KID to held-out cells 0.121 / 0.132 with `gan`, 0.063 / 0.082
   with `bank` for the same CGAN settings, in a third of the training time
   (benchmarks/generators_real_herlev.md). The bundle then holds the training label maps (not
   the images), as it holds their region colours.
3. One CGAN, condition → RGB, on (condition, image) pairs of all classes. The condition is the
   mask, or the label map's one-hot channels plus the map painted with the cell's own region
   colours (`cgan.colours`): which colour a Pap cell's cytoplasm and glass are (blue, green,
   pink; lavender or grey) is not in its shape, and a generator asked to guess it from the shape
   paints the mean colour. When sampling, a class's colours are drawn from its training cells'
   (with noise); `cgan.augment: dihedral` turns each training pair, map and cell together, by a
   random flip/quarter turn (an option: no gain on Herlev over 4 seeds). Best epoch by
   validation generator loss (§3.3, §4.1), the last (EMA) weights, or the epoch whose sampled
   cells are nearest the training cells by KID (`cgan.select: kid`). `cgan.restarts: K` trains
   the CGAN from K seeds (stages `cgan`, `cgan/r1`, ...) and keeps the one whose cells are
   nearest the training cells by the same KID: on a small set the training seed moves the
   cells' distance to held-out ones more than any setting does.
4. `sample(n, cls)` = CGAN(map), map = mask_gan[cls](z) (eq. 7) or a warped training map of
   the class: images and the nucleus masks that made them.
Every adversarial stage trains with the small-data pieces (small_data.py).
All three stages train in one Ray Train job; a stage whose settings and data are unchanged
(e.g. the mask GANs of a trial that only changes λ) comes from the stage cache.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Literal

import numpy as np
import torch

from ..bundle import build_net, load_per_class, load_state, read_bundle
from ..data.folder import ImageSet
from ..io import stable_hash
from ..masks.config import MasksConfig, cache_identity, dataset_label_maps, dataset_masks
from ..masks.labels import N_LABELS, NUCLEUS, paint, region_colours
from ..masks.segmenter import pinned
from ..nets import MaskGenerator, UNet
from ..nets.images import from_unit, to_unit
from ..training.stage import StageSpec, extend
from .base import Generator, GeneratorConfig
from .gan import (
    CGANConfig,
    CGANParams,
    CGANStage,
    LatentGANConfig,
    MaskGANParams,
    MaskGANStage,
    masks_to_unit,
    seeded_z,
)
from .map_prior import MapPrior, bank, bank_meta, check_prior, draw_from_bank


@dataclasses.dataclass
class SynCGANConfig(GeneratorConfig):
    """SynCGAN's own settings (keys and reasons: configs/models/syncgan.yaml)."""

    name: str = "syncgan"
    masks: MasksConfig = dataclasses.field(default_factory=MasksConfig)
    mask_gan: LatentGANConfig = dataclasses.field(default_factory=LatentGANConfig)
    cgan: CGANConfig = dataclasses.field(default_factory=CGANConfig)
    # sampling's label maps: the class's training maps warped, or the class mask GANs (eq. 7)
    prior: Literal["gan", "bank"] = "bank"
    # prior bank: the elastic warp's largest shift, a share of the image size (masks/warp.py)
    warp: float = 0.06

    def validate(self) -> None:
        check_prior(self.prior, self.warp)


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
        self.cgan, self.mask_gans, self.meta = (
            cgan.eval(),
            {k: g.eval() for k, g in mask_gans.items()},
            meta,
        )
        self.classes = list(meta["classes"])
        self.maps = MapPrior(meta, self.mask_gans)

    # -- training ---------------------------------------------------------------
    @classmethod
    def bundle_key(cls, cfg: SynCGANConfig, data_key: str, seed: int) -> str:
        """The config's hash plus what its masks are (a segmenter named by an alias may change)."""
        return super().bundle_key(cfg, f"{data_key}:masks={masks_key(cfg.masks)}", seed)

    @classmethod
    def stages(
        cls, train: ImageSet, val: ImageSet, cfg: SynCGANConfig, data_key: str, seed: int
    ) -> list[StageSpec]:
        size = int(train.images.shape[1])
        method = (
            f"{cfg.masks.method} {cfg.masks.segmenter}" if cfg.masks.segmenter else cfg.masks.method
        )
        kind = "label maps" if cfg.masks.labels == "cell" else "nucleus masks"
        print(
            f"[syncgan] {kind} ({cfg.masks.source}, {method}) "
            f"for {len(train)} train + {len(val)} val images",
            file=sys.stderr,
            flush=True,
        )
        # an alias resolved once: both mask sets and their key name one segmenter version
        masks = pinned(cfg.masks)
        m_train, m_val = priors(train, masks), priors(val, masks)
        k = n_labels(masks)
        mkey = f"{data_key}:masks={masks_key(masks)}"
        mp = extend(cfg.mask_gan, MaskGANParams, size=size, labels=k)
        specs = (
            [
                StageSpec(
                    f"mask_gan/{c}",
                    MaskGANStage(mp),
                    train={"mask": masks_to_unit(m_train[train.labels == i], k)},
                    val=None,
                    fixed={"z": seeded_z(16, cfg.mask_gan.z_dim, 1234)},
                    data_key=f"{mkey}:{c}",
                    seed=seed,
                )
                for i, c in enumerate(train.class_names)
            ]
            if cfg.prior == "gan"
            else []
        )
        fixed_idx = np.arange(min(8, len(val)))
        y_train, y_val = (
            condition(train.images, m_train, k, cfg.cgan),
            condition(val.images, m_val, k, cfg.cgan),
        )
        cols, sampling_meta = None, {}
        if uses_colours(masks, cfg.cgan):
            # the region colours of every training cell, per
            # class: sampling draws a cell's colours from them
            cols = region_colours(train.images, m_train)
            sampling_meta["colours"] = {
                c: np.round(cols[train.labels == i], 2).tolist()
                for i, c in enumerate(train.class_names)
            }
        if (
            cfg.prior == "bank"
        ):  # the maps sampling warps (a function of the data, as the colours are)
            sampling_meta["bank"] = bank(train, m_train)
        pairs = {"mask": y_train, "image": to_unit(train.images)}
        val_pairs = {
            "mask": y_val,
            "image": to_unit(val.images),
            # the same conditions score every restart: their KIDs compare the generators only
            **(
                kid_conditions(train, m_train, k, cols, cfg.warp, seed)
                if cfg.cgan.scores_kid
                else {}
            ),
        }
        fixed = {"mask": y_val[fixed_idx], "image": to_unit(val.images[fixed_idx])}
        for r in range(cfg.cgan.restarts):  # restart r: seed + r (the first is the plain run's)
            cgan = CGANStage(extend(cfg.cgan, CGANParams, size=size, in_ch=int(y_train.shape[1])))
            cgan.sampling_meta = dict(sampling_meta)
            specs.append(
                StageSpec(
                    cgan_label(r),
                    cgan,
                    train=pairs,
                    val=val_pairs,
                    fixed=fixed,
                    data_key=mkey,
                    seed=seed + r,
                )
            )
        return specs

    @staticmethod
    def chosen_cgan(results: dict, restarts: int) -> tuple[str, list[float]]:
        """The CGAN stage the bundle keeps: the only one, or of `restarts` trainings the one whose
        kept weights' cells are nearest the training cells (KID, `kid_train` of its kept epoch),
        and every restart's KID."""
        labels = [cgan_label(r) for r in range(restarts)]
        if restarts == 1:
            return labels[0], []
        kids = [float(results[n].meta["best_metrics"]["kid_train"]) for n in labels]
        return labels[int(np.argmin(kids))], kids

    @classmethod
    def assemble(cls, train: ImageSet, cfg: SynCGANConfig, results: dict, data_key: str):
        chosen, kids = cls.chosen_cgan(results, cfg.cgan.restarts)
        if kids:
            print(
                f"[syncgan] {cfg.cgan.restarts} CGAN restarts, KID to the training cells "
                + ", ".join(f"{k:.4f}" for k in kids)
                + f": keeping {chosen}",
                file=sys.stderr,
                flush=True,
            )
        results = {**results, "cgan": results[chosen]}
        meta = {
            "classes": list(train.class_names),
            "size": int(train.images.shape[1]),
            "mask_source": cfg.masks.source,
            "labels": n_labels(cfg.masks),
            "cgan": {
                "kwargs": results["cgan"].meta["generator_kwargs"],
                "best_epoch": results["cgan"].meta["best_epoch"],
                **({"restart": chosen, "restart_kid_train": kids} if kids else {}),
            },
            "prior": cfg.prior,
        }
        if cfg.prior == "gan":
            meta["mask_gans"] = {
                c: {"kwargs": results[f"mask_gan/{c}"].meta["generator_kwargs"]}
                for c in train.class_names
            }
        else:  # a CGAN stage cached by a run with the GAN prior holds no bank: the maps again
            meta.update(
                bank_meta(
                    results["cgan"].meta, train, lambda: priors(train, pinned(cfg.masks)), cfg.warp
                )
            )
        if (
            "colours" in results["cgan"].meta
        ):  # made with the stage (stages()), not by computing the masks again
            meta["colours"] = results["cgan"].meta["colours"]
        states = {"cgan": results["cgan"].best_state()}
        states.update(
            {
                f"mask_gan_{c}": results[f"mask_gan/{c}"].best_state()
                for c in train.class_names
                if cfg.prior == "gan"
            }
        )
        return meta, states, {}

    # -- sampling ---------------------------------------------------------------
    @classmethod
    def load(cls, path) -> SynCGAN:
        meta, path = read_bundle(path)
        # absurd or unknown kwargs: one line
        cgan = build_net(UNet, meta["cgan"]["kwargs"], path / "generator.json")
        cgan.load_state_dict(load_state(path, "cgan"))
        gans = (
            load_per_class(path, meta["mask_gans"], MaskGenerator, "mask_gan_")
            if meta.get("prior", "gan") == "gan"
            else {}
        )
        return cls(cgan, gans, meta)

    @torch.no_grad()
    def sample_maps(
        self, n: int, cls: str, seed: int = 0, batch: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """n synthetic images of class `cls` (uint8 [n,S,S,3]) and the label maps (uint8) or nucleus
        masks (bool) [n,S,S] that made them."""
        self.check_class(cls)
        k = int(self.meta.get("labels", 1))
        g = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        colours = (
            np.asarray(self.meta["colours"][cls], dtype=np.float32)
            if "colours" in self.meta
            else None
        )
        imgs, maps = [], []
        with torch.random.fork_rng(
            devices=[]
        ):  # the CGAN's per-pixel noise (cgan.noise) from the seed, not the caller's state
            torch.manual_seed(seed)
            for start in range(0, n, batch):
                b = min(batch, n - start)
                m = self.maps.draw(cls, b, k, g, rng)
                y = sampling_condition(m, k, colours, rng)
                imgs.append(from_unit(self.cgan(torch.as_tensor(y))))  # G_CGAN(condition)
                maps.append(m)
        return np.concatenate(imgs), np.concatenate(maps)

    def sample(
        self, n: int, cls: str, seed: int = 0, batch: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        """n synthetic images of class `cls` (uint8 [n,S,S,3]) and their nucleus masks (bool [n,S,S])."""
        imgs, maps = self.sample_maps(n, cls, seed, batch)
        return imgs, (maps == NUCLEUS if maps.dtype == np.uint8 else maps)


# ----------------------------------------------------------------------------- conditions


def n_labels(masks: MasksConfig) -> int:
    """Channels of the prior: 1 for a binary nucleus mask, one per label of a label map."""
    return N_LABELS if masks.labels == "cell" else 1


def uses_colours(masks: MasksConfig, cgan: CGANConfig) -> bool:
    return masks.labels == "cell" and cgan.colours


def priors(ds: ImageSet, masks: MasksConfig) -> np.ndarray:
    """What the mask GANs learn and the CGAN is conditioned on: label maps or nucleus masks."""
    nuclei = nucleus_masks(ds, masks)
    return dataset_label_maps(ds, masks, nuclei) if masks.labels == "cell" else nuclei


def condition(images: np.ndarray, maps: np.ndarray, k: int, cgan: CGANConfig) -> np.ndarray:
    """The CGAN's input: the prior's channels (± 1), then, with label maps and `cgan.colours`, the
    map painted with each image's own region colours (training; sampling draws them)."""
    y = masks_to_unit(maps, k)
    if k > 1 and cgan.colours:
        y = np.concatenate([y, paint(maps, region_colours(images, maps))], 1)
    return y


def sampling_condition(
    maps: np.ndarray, k: int, colours: np.ndarray | None, rng: np.random.Generator
) -> np.ndarray:
    """The CGAN's input when sampling: the maps' channels (± 1), then, with region colours, the
    maps painted with colours drawn from the class's training cells (`colours`, [n_cells, K, 3])."""
    y = masks_to_unit(maps, k)
    if colours is not None:
        y = np.concatenate([y, paint(maps, draw_colours(colours, len(maps), rng))], 1)
    return y


def cgan_label(restart: int) -> str:
    """The stage label of CGAN restart `restart` (`cgan.restarts`): the first is plain `cgan`."""
    return "cgan" if restart == 0 else f"cgan/r{restart}"


def kid_conditions(
    train: ImageSet, maps: np.ndarray, k: int, colours: np.ndarray | None, warp: float, seed: int
) -> dict:
    """What `cgan.select: kid` scores (gan.CGANStage.kid_to_training): per class, twice its
    training cells' count of conditions drawn as sampling with the bank prior draws them (a
    training map warped, colours from the class's cells), and the training cells to score them
    against. Seeded: the same conditions at every scored epoch."""
    rng = np.random.default_rng(seed)
    conds, cls = [], []
    for i in range(len(train.class_names)):
        n = 2 * int((train.labels == i).sum())
        m = draw_from_bank(maps[train.labels == i], n, rng, warp)
        conds.append(
            sampling_condition(m, k, None if colours is None else colours[train.labels == i], rng)
        )
        cls.append(np.full(n, i, dtype=np.int64))
    return {
        "kid_cond": np.concatenate(conds).astype(np.float32),
        "kid_cls": np.concatenate(cls),
        "kid_real": train.images,
        "kid_real_cls": train.labels.astype(np.int64),
    }


def draw_colours(
    colours: np.ndarray, n: int, rng: np.random.Generator, jitter: float = 0.25
) -> np.ndarray:
    """n region-colour codes [n, K, 3] for one class: a training cell's colours plus Gaussian noise
    of `jitter` x the class's spread per value (a kernel density draw: new colours, near real ones)."""
    pick = colours[rng.integers(len(colours), size=n)]
    sd = colours.std(axis=0, keepdims=True) * jitter
    return np.clip(pick + rng.standard_normal(pick.shape).astype(np.float32) * sd, 0, 255)
