"""Refined simulation (Hou et al., "Unsupervised histopathology image synthesis", CVPR 2019):
generator `refined-sim`.

1. Initial synthesis (`data/refsim.py`): polygon nuclei with exact masks, textured from the
   real training tiles (colour deconvolution, nuclei inpainted out of the background), with
   density and size drawn per image and clutter.
2. One stage on the one loop (`refined_stage.py`): a style-conditioned residual refiner R
   against a style-conditioned discriminator D (history buffer), with a U-Net segmenter S
   that R is pushed to make mistakes on (hard examples) and that trains on the refined images
   weighted by D's realism, in the paper's phases (refiner, discriminator, joint, segmenter).
3. `sample(n, cls)`: refined images of class `cls` (textures and style from that class's
   training tiles) with their exact masks: a training-set policy, or masks for SynCGAN.
   `segment(images)`: S's nucleus masks for real images (`cytoray segment`).

The training tiles are only a style and texture reference: their masks are never used.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import torch

from ..bundle import BUNDLE_META, build_net, load_arrays, load_state, npz_bytes, read_bundle
from ..config import to_plain
from ..data.folder import ImageSet
from ..data.nuclei import rgb_to_od
from ..data.refsim import Reference, SynthesisConfig, initial_images
from ..errors import ConfigError, DataError
from ..masks.nucleus_net import REFINED_SIM, segment_with, segmenter_net
from ..nets import UNet
from ..nets.images import from_unit, to_unit
from ..nets.patchgan import min_input_size
from ..nets.refiner import Refiner
from ..training.stage import StageSpec
from .base import Generator, GeneratorConfig
from .refined_stage import RefinedSimStage
from .small_data import SmallData

REFERENCES_FILE = "references.npz"
LABEL = REFINED_SIM


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass
class RefinerConfig(SmallData):
    diffaug: str = ""  # D's real and refined crops augmented alike (small_data.py, e.g. translation,cutout); "" = none (Hou et al.)
    ema: float = 0.0  # a moving average of R is not wired into the refined-sim bundle yet (0 only)
    ada: float = 0.0  # adaptive augmentation is not wired into the refined-sim stage (0 only)
    enabled: bool = True  # false: S trains on the initial images (the "raw simulation" ablation)
    width: int = 16  # trunk channels (Hou et al.: 32; 16 keeps a CPU trial to minutes, 32 on a GPU)
    blocks: int = 5  # Hou et al.: 5 residual blocks
    style_dim: int = 8  # style vector tiled into R and D; 0 = no style reference
    style_base: int = 16  # style encoder width: pooled colour/texture statistics need little
    lr: float = 1e-3  # R learning rate (SimGAN: 0.001); a few hundred steps on CPU must move R
    d_lr: float = 1e-3  # D learning rate (SimGAN: 0.001)
    beta1: float = 0.5  # GANs dislike 0.9 momentum
    # Hou et al.: L1 self-regularisation to the input (per-image pixel sum)
    l1_weight: float = 0.001
    l2_weight: float = 0.01  # Hou et al.: L2 self-regularisation to the input (per-image pixel sum)
    # Hou et al.: weight of −S's loss in R's loss (hard examples); searched
    hard_weight: float = 1e-7
    history: int = 256  # SimGAN history buffer of refined images shown to D
    history_fraction: float = 0.5  # SimGAN: half of D's fake batch comes from the history
    d_base: int = 16  # discriminator width (small: D must not win outright on tiny sets)
    d_layers: int = 2  # 34 px receptive field: local realism (SimGAN), about one 32 px patch

    def validate(self) -> None:
        for k in ("width", "blocks", "lr", "d_lr", "d_base", "d_layers", "style_base"):
            if getattr(self, k) <= 0:
                raise ConfigError(f"refiner.{k}={getattr(self, k)}: must be > 0")
        for k in ("style_dim", "l1_weight", "l2_weight", "hard_weight", "history"):
            if getattr(self, k) < 0:
                raise ConfigError(f"refiner.{k}={getattr(self, k)}: must be >= 0")
        if not 0 <= self.history_fraction <= 1:
            raise ConfigError(
                f"refiner.history_fraction={self.history_fraction}: must lie in [0, 1]"
            )
        self.validate_small_data("refiner.")
        if "colour" in self.diffaug or "color" in self.diffaug:
            raise ConfigError(
                f"refiner.diffaug={self.diffaug!r}: no colour op: matching the reference's colour is R's job "
                "(translation, cutout, dihedral are fine)"
            )
        for key in ("ema", "ada", "r1"):
            if getattr(self, key) != 0:
                raise ConfigError(
                    f"refiner.{key}={getattr(self, key)}: not wired into the refined-sim stage yet; use 0 "
                    "(refiner.diffaug is)"
                )


@dataclasses.dataclass
class SegmenterConfig:
    base: int = 16  # U-Net width (CPU budget; nuclei are simple shapes)
    depth: int = 3  # stride-2 levels: 32 px patches → 4 px innermost, a few nuclei of context
    lr: float = 1e-3  # Adam learning rate (a supervised net on exact masks)
    dice_weight: float = 1.0  # soft-Dice term beside pixel BCE: nuclei cover ~15% of a tile
    # weight each refined image by w = p/(1−p), p = D's "real" probability
    example_weights: bool = True
    weight_min: float = 0.2  # Hou et al.: w clipped below at 0.2 (an unrealistic image still teaches a little); searched
    # Hou et al.: w clipped above at 2 (no single image dominates a batch); searched
    weight_max: float = 2.0
    threshold: float = 0.5  # sigmoid probability above which a pixel is nucleus

    def validate(self) -> None:
        if self.base <= 0 or self.depth < 1 or self.lr <= 0 or self.dice_weight < 0:
            raise ConfigError("segmenter.base, depth and lr must be > 0 and dice_weight >= 0")
        if not 0 < self.weight_min <= self.weight_max:
            raise ConfigError(
                f"segmenter.weight_min={self.weight_min}, weight_max={self.weight_max}: need 0 < weight_min <= weight_max"
            )
        if not 0 < self.threshold < 1:
            raise ConfigError(f"segmenter.threshold={self.threshold}: must lie in (0, 1)")


@dataclasses.dataclass
class ScheduleConfig:
    # R alone on self-regularisation; R starts as the identity, so 0 suffices
    refiner_epochs: int = 0
    discriminator_epochs: int = 1  # D warm-up against the (near-identity) refiner, as SimGAN
    joint_epochs: int = 6  # alternating R (+ hard examples) / D / S steps: where refinement happens
    # S alone on images from the frozen R; the best epoch is chosen here or in joint
    segmenter_epochs: int = 4
    # R steps per D step in the joint phase (SimGAN: 2 on its data; 1 keeps D ahead here)
    r_steps: int = 1

    def validate(self) -> None:
        if (
            min(
                self.refiner_epochs,
                self.discriminator_epochs,
                self.joint_epochs,
                self.segmenter_epochs,
            )
            < 0
        ):
            raise ConfigError("schedule.*_epochs must be >= 0")
        if self.joint_epochs + self.segmenter_epochs + self.discriminator_epochs < 1:
            raise ConfigError(
                "schedule: the segmenter needs at least one discriminator, joint or segmenter epoch"
            )
        if self.r_steps < 1:
            raise ConfigError(f"schedule.r_steps={self.r_steps}: must be >= 1")


@dataclasses.dataclass
class RefinedSimConfig(GeneratorConfig):
    """Refined simulation's settings (keys and reasons: configs/models/refined-sim.yaml)."""

    name: str = LABEL
    patch: int = 32  # training crop side (px): CPU-sized (64-128 on a GPU); R, D and S are fully convolutional
    pool: int = 256  # initial images (and real crops) per epoch; refined afresh every step
    holdout: int = 32  # held-out initial images for validation (Dice, D accuracy)
    batch_size: int = 8  # 32 steps an epoch at pool 256: GANs need steps more than batch size
    synthesis: SynthesisConfig = dataclasses.field(default_factory=SynthesisConfig)
    refiner: RefinerConfig = dataclasses.field(default_factory=RefinerConfig)
    segmenter: SegmenterConfig = dataclasses.field(default_factory=SegmenterConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)

    def validate(self) -> None:
        if self.patch < 16 or self.patch % 2**self.segmenter.depth:
            raise ConfigError(
                f"patch={self.patch}: must be >= 16 and divisible by 2**segmenter.depth={2**self.segmenter.depth}"
            )
        if self.patch < min_input_size(self.refiner.d_layers):
            raise ConfigError(
                f"patch={self.patch}: refiner.d_layers={self.refiner.d_layers} needs >= {min_input_size(self.refiner.d_layers)} px"
            )
        if self.pool < 2 * self.batch_size or self.batch_size < 2 or self.holdout < 2:
            raise ConfigError(
                f"pool={self.pool}, batch_size={self.batch_size}, holdout={self.holdout}: need batch_size >= 2, "
                "pool >= 2 batches and holdout >= 2"
            )


# ----------------------------------------------------------------------------- data


def references(
    images: np.ndarray, seed: int, cfg: SynthesisConfig, names: list[str], quiet: bool = False
) -> tuple[list[Reference], np.ndarray]:
    """A Reference per usable tile and the indices of those tiles (a tile where Otsu finds no
    nuclei is skipped with a note; none usable is an error naming the first)."""
    rng, refs, keep, bad = np.random.default_rng(seed), [], [], []
    for i, t in enumerate(images):
        try:
            refs.append(Reference.from_tile(t, rng, cfg.min_radius_px, names[i]))
            keep.append(i)
        except DataError as e:
            bad.append(str(e))
    if not refs:
        raise DataError(
            bad[0] if bad else "no reference tiles: give at least one real H&E training image"
        )
    if bad and not quiet:
        print(
            f"[refined-sim] skipped {len(bad)}/{len(images)} reference tiles, e.g. {bad[0]}",
            file=sys.stderr,
            flush=True,
        )
    return refs, np.asarray(keep)


def random_crops(
    tiles: np.ndarray, which: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """One random size x size crop of tiles[which[i]] for every i (uint8 [N,size,size,3])."""
    h, w = tiles.shape[1:3]
    ys, xs = rng.integers(0, h - size + 1, len(which)), rng.integers(0, w - size + 1, len(which))
    return np.stack([tiles[t, y : y + size, x : x + size] for t, y, x in zip(which, ys, xs)])


# ----------------------------------------------------------------------------- generator


class RefinedSim(Generator):
    name, Config = LABEL, RefinedSimConfig

    def __init__(
        self, refiner: Refiner | None, segmenter: UNet, refs: dict[str, dict], meta: dict
    ) -> None:
        self.refiner = refiner.eval() if refiner is not None else None
        self.segmenter, self.refs, self.meta = segmenter.eval(), refs, meta
        self.classes = list(meta["classes"])
        self.synthesis = SynthesisConfig(**meta["config"]["synthesis"])

    # -- training -----------------------------------------------------------------
    @classmethod
    def check(cls, train: ImageSet, val: ImageSet, cfg: RefinedSimConfig) -> None:
        size = int(train.images.shape[1])
        if size < cfg.patch:
            raise ConfigError(
                f"generator.patch={cfg.patch} is larger than the {size} px training images; lower generator.patch "
                f"to <= {size} (a multiple of {2**cfg.segmenter.depth})"
            )
        if len(train) < 1 or len(val) < 1:
            raise DataError(
                f"{train.source}: refined-sim needs at least one training (reference) and one validation image"
            )

    @classmethod
    def stages(
        cls, train: ImageSet, val: ImageSet, cfg: RefinedSimConfig, data_key: str, seed: int
    ) -> list[StageSpec]:
        P = cfg.patch
        # textures: the same in the bundle
        refs, usable = references(train.images, 0, cfg.synthesis, train.names)
        tiles = train.images[usable]
        rng = np.random.default_rng([seed, 1])
        which = rng.integers(0, len(refs), cfg.pool)
        # 1. The pool: initial images from tile t's textures, a real crop and a reference crop of t.
        init, masks = initial_images(refs, which, P, seed, cfg.synthesis)
        train_arrays = {
            "init": to_unit(init),
            "mask": masks[:, None].astype(np.float32),
            "real": to_unit(random_crops(tiles, which, P, rng)),
            "style": to_unit(random_crops(tiles, which, P, rng)),
        }
        # 2. Validation: real tiles (Dice where they have masks), held-out initial images.
        hold = rng.integers(0, len(refs), cfg.holdout)
        h_init, h_mask = initial_images(refs, hold, P, seed + 7919, cfg.synthesis)
        vi = np.arange(len(val)) % len(val)
        val_arrays = {
            "init": to_unit(h_init),
            "init_mask": h_mask[:, None].astype(np.float32),
            "style": to_unit(random_crops(tiles, hold, P, rng)),
            "real": to_unit(
                random_crops(val.images, rng.integers(0, len(val), cfg.holdout), P, rng)
            ),
            "image": to_unit(val.images[vi]),
        }
        if val.masks is not None:
            val_arrays["mask"] = val.masks[vi][:, None].astype(np.float32)
        fixed = {k: train_arrays[k][:8] for k in ("init", "mask", "style")}
        print(
            f"[refined-sim] {len(refs)} reference tiles (nucleus radius {np.median([r.radius for r in refs]):.1f} px, cover "
            f"{np.median([r.cover for r in refs]):.2f}); {cfg.pool} initial {P} px images; validation Dice on "
            f"{'real masks' if val.masks is not None else 'held-out refined images (no real masks)'}",
            file=sys.stderr,
            flush=True,
        )
        params = {**to_plain(cfg), "size": int(train.images.shape[1])}
        return [
            StageSpec(
                LABEL,
                RefinedSimStage(params),
                train=train_arrays,
                val=val_arrays,
                fixed=fixed,
                data_key=data_key,
                seed=seed,
            )
        ]

    @classmethod
    def assemble(cls, train: ImageSet, cfg: RefinedSimConfig, results: dict, data_key: str):
        res = results[LABEL]
        refs, usable = references(train.images, 0, cfg.synthesis, train.names, quiet=True)
        labels = train.labels[usable]
        to_u8 = lambda od: np.clip(np.exp(-od) * 255 + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
        arrays, classes = {}, {}
        for c, name in enumerate(train.class_names):
            idx = np.nonzero(labels == c)[0]
            if not len(idx):
                continue
            classes[name] = c
            arrays[f"tiles_{c}"] = train.images[usable[idx]]
            arrays[f"background_{c}"] = np.stack([to_u8(refs[i].background) for i in idx])
            arrays[f"nucleus_{c}"] = np.stack([to_u8(refs[i].nucleus) for i in idx])
            arrays[f"stats_{c}"] = np.array(
                [[refs[i].radius, refs[i].cover] for i in idx], np.float32
            )
        m = res.meta
        meta = {
            "classes": list(classes),
            "class_index": classes,
            "size": int(train.images.shape[1]),
            "patch": cfg.patch,
            "refined": m["refined"],
            "refiner_kwargs": m["refiner_kwargs"],
            "segmenter_kwargs": m["segmenter_kwargs"],
            "best_epoch": m["best_epoch"],
            "best_metrics": m["best_metrics"],
            "phases": m["phases"],
            "references": REFERENCES_FILE,
        }
        best = res.best_state()
        states = {"segmenter": best["S"], **({"refiner": best["R"]} if "R" in best else {})}
        history = json.dumps(
            {LABEL: res.history}
        ).encode()  # per-epoch stage metrics: MLflow learning curves
        return meta, states, {REFERENCES_FILE: npz_bytes(**arrays), "history.json": history}

    # -- sampling -----------------------------------------------------------------
    @classmethod
    def load(cls, path) -> RefinedSim:
        meta, path = read_bundle(path)
        seg = segmenter_net(meta["segmenter_kwargs"], path / BUNDLE_META, path / "segmenter.pt")
        ref = None
        if meta["refined"]:
            ref = build_net(Refiner, meta["refiner_kwargs"], path / "generator.json")
            ref.load_state_dict(load_state(path, "refiner"))
        refs = {}
        with load_arrays(path / meta["references"]) as z:
            for name, c in meta["class_index"].items():
                refs[name] = {k: z[f"{k}_{c}"] for k in ("tiles", "background", "nucleus", "stats")}
        return cls(ref, seg, refs, meta)

    def _references(self, cls: str) -> list[Reference]:
        r = self.refs[cls]
        od = lambda u8: rgb_to_od(u8.astype(np.float32) / 255.0)  # noqa: E731
        return [
            Reference(od(b), od(n), float(s[0]), float(s[1]))
            for b, n, s in zip(r["background"], r["nucleus"], r["stats"])
        ]

    @torch.no_grad()
    def refine(self, images: np.ndarray, style: np.ndarray, batch: int = 32) -> np.ndarray:
        """uint8 initial images [N,S,S,3] refined in the style of reference crops [N,P,P,3]."""
        if self.refiner is None:
            return images
        out = [
            from_unit(
                self.refiner(
                    torch.from_numpy(to_unit(images[i : i + batch])),
                    torch.from_numpy(to_unit(style[i : i + batch])),
                )
            )
            for i in range(0, len(images), batch)
        ]
        return np.concatenate(out) if out else images

    def sample(
        self, n: int, cls: str, seed: int = 0, batch: int = 32
    ) -> tuple[np.ndarray, np.ndarray]:
        """n refined images of class `cls` (uint8 [n,S,S,3]) and their exact masks (bool [n,S,S])."""
        self.check_class(cls)
        refs, tiles = self._references(cls), self.refs[cls]["tiles"]
        rng = np.random.default_rng([seed, self.meta["class_index"][cls], 2])
        which = rng.integers(0, len(refs), n)
        init, masks = initial_images(
            refs, which, int(self.meta["size"]), int(rng.integers(2**31)), self.synthesis
        )
        style = random_crops(tiles, which, int(self.meta["patch"]), rng)
        return self.refine(init, style, batch), masks

    def segment(self, images: np.ndarray, batch: int = 8) -> np.ndarray:
        """Nucleus masks (bool [N,H,W]) of real uint8 images [N,H,W,3] by the trained segmenter."""
        return segment_with(
            self.segmenter,
            images,
            int(self.meta["segmenter_kwargs"]["depth"]),
            float(self.meta["config"]["segmenter"]["threshold"]),
            batch,
        )
