"""One entry point for study data: a folder on disk or the embedded simulator, in memory."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from ..config import DataConfig
from .folder import ImageSet, load_folder

if TYPE_CHECKING:
    from .splits import Manifest


def simulated_set(kind: str, n: int, size: int, seed: int, padding: str = "crop") -> ImageSet:
    """The embedded simulator's images as an ImageSet (no files written).

    The simulator pads some images with flat bands, as real folders are; padding="crop" cuts
    them off and resizes back to `size` exactly as `load_folder` does, "keep" leaves them.
    sha256 is that of the simulated image as drawn (what a written PNG would hold).
    """
    from .background import check_padding_mode, crop_padding, detect_bands
    from .images import fit_square
    from .simulate import simulate

    check_padding_mode(padding, "padding")
    s = simulate(kind=kind, n=n, size=size, seed=seed)
    images, masks = s.images.copy(), s.masks.astype(bool)
    if padding == "crop":
        for i, im in enumerate(s.images):
            bands = detect_bands(im)
            if bands.any() and not bands.flat:
                images[i] = fit_square(crop_padding(im, bands), size)
                masks[i] = fit_square(crop_padding(masks[i], bands), size, nearest=True)
    return ImageSet(
        images=images,
        labels=s.labels.astype(np.int64),
        class_names=tuple(s.class_names),
        names=[f"{c}/{stem}" for c, stem in zip((s.class_names[i] for i in s.labels), s.names)],
        sha256=[hashlib.sha256(im.tobytes()).hexdigest() for im in s.images],
        masks=masks,
        groups=None,
        source=f"simulator:{kind}:n={n}:size={size}:seed={seed}",
        padding=padding,
    )


def load_split(cfg: DataConfig, path, ds: ImageSet | None = None) -> tuple[ImageSet, Manifest]:
    """The dataset and its split manifest at `path`: reused when it was made for these exact
    images at this size with this seed and these ratios (and still passes the leakage check),
    otherwise made anew and saved. `ds`: the dataset of `cfg`, when the caller loaded it already."""
    import sys
    from pathlib import Path

    from .splits import Manifest, check_leakage, make_manifest

    ds, path = (load_dataset(cfg, progress=True) if ds is None else ds), Path(path)
    if path.is_file():
        m = Manifest.load(path)
        same = (m.seed, [float(r) for r in m.ratios], m.padding) == (
            cfg.split_seed,
            [float(r) for r in cfg.split_ratios],
            ds.padding,
        )
        if [it["sha256"] for it in m.items] == ds.sha256 and m.size == cfg.size and same:
            check_leakage(m)
            return ds, m
        print(
            f"[data] {path} belongs to other data or split settings; making a new split",
            file=sys.stderr,
        )
    m, _ = make_manifest(ds, cfg.split_ratios, cfg.split_seed, cfg.near_duplicate_bits)
    m.save(path)
    return ds, m


def load_dataset(cfg: DataConfig, progress: bool = False) -> ImageSet:
    """Load `cfg.root` (a folder dataset) or, when it is None, the embedded simulator."""
    padding = cfg.padding
    if cfg.root:
        return load_folder(
            cfg.root, cfg.size, cfg.classes, cfg.magnification, progress=progress, padding=padding
        )
    return simulated_set(cfg.sim_kind, cfg.sim_n, cfg.size, cfg.sim_seed, padding=padding)
