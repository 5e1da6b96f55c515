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

import json
import sys

import numpy as np
import torch

from ..bundle import BUNDLE_META, build_net, load_arrays, load_state, npz_bytes, read_bundle
from ..data.folder import ImageSet
from ..data.nuclei import rgb_to_od
from ..data.refsim import Reference, SynthesisConfig, initial_images
from ..errors import ConfigError, DataError
from ..masks.nucleus_net import REFINED_SIM, segment_with, segmenter_net
from ..nets import UNet
from ..nets.images import from_unit, to_unit
from ..nets.refiner import Refiner
from ..training.stage import StageSpec, extend
from .base import Generator
from .refined_stage import (
    RefinedSimConfig,
    RefinedSimParams,
    RefinedSimStage,
    RefinerConfig,
    ScheduleConfig,
    SegmenterConfig,
)

REFERENCES_FILE = "references.npz"
LABEL = REFINED_SIM
# the settings live beside the stage that reads them; imported here by their users
__all__ = ["RefinedSim", "RefinedSimConfig", "RefinerConfig", "ScheduleConfig", "SegmenterConfig"]


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
                f"generator.patch={cfg.patch} is larger than the {size} px training images; "
                f"lower generator.patch to <= {size} (a multiple of {2**cfg.segmenter.depth})"
            )
        if len(train) < 1 or len(val) < 1:
            raise DataError(
                f"{train.source}: refined-sim needs at least one "
                "training (reference) and one validation image"
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
            f"[refined-sim] {len(refs)} reference tiles (nucleus radius "
            f"{np.median([r.radius for r in refs]):.1f} px, cover "
            f"{np.median([r.cover for r in refs]):.2f}); "
            f"{cfg.pool} initial {P} px images; validation Dice on "
            f"{'real masks' if val.masks is not None else 'held-out refined images (no real masks)'}",
            file=sys.stderr,
            flush=True,
        )
        params = extend(cfg, RefinedSimParams, size=int(train.images.shape[1]))
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

    def references(self, cls: str) -> list[Reference]:
        """The training tiles of class `cls` as initial-image references (background and nucleus
        optical densities, nucleus statistics): what `initial_images` draws from."""
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
        rng = np.random.default_rng([seed, self.meta["class_index"][cls], 2])
        which = rng.integers(0, len(self.refs[cls]["tiles"]), n)
        _, refined, masks = self.synthesise(cls, which, int(rng.integers(2**31)), rng, batch)
        return refined, masks

    def synthesise(
        self, cls: str, which: np.ndarray, seed: int, rng: np.random.Generator, batch: int = 32
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Initial images drawn from the references `which` of class `cls` (seeded by `seed`), the
        same images refined in the style of random crops of those tiles (drawn from `rng`), and their
        exact masks: (initial uint8 [N,S,S,3], refined uint8 [N,S,S,3], masks bool [N,S,S])."""
        init, masks = initial_images(
            self.references(cls), which, int(self.meta["size"]), seed, self.synthesis
        )
        style = random_crops(self.refs[cls]["tiles"], which, int(self.meta["patch"]), rng)
        return init, self.refine(init, style, batch), masks

    def segment(self, images: np.ndarray, batch: int = 8) -> np.ndarray:
        """Nucleus masks (bool [N,H,W]) of real uint8 images [N,H,W,3] by the trained segmenter."""
        return segment_with(
            self.segmenter,
            images,
            int(self.meta["segmenter_kwargs"]["depth"]),
            float(self.meta["config"]["segmenter"]["threshold"]),
            batch,
        )
