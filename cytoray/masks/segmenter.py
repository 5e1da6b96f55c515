"""Nucleus masks by a trained segmenter (`masks.method: segmenter`): the refined-sim nucleus
segmenter (Hou et al. 2019) as the mask source of SynCGAN.

    masks:
      method: segmenter
      segmenter: nucleus-segmenter@champion   # or NAME/VERSION, or a local segmenter bundle folder

A segmenter is named by what `cytoray segment` loads. Its identity is the sha256 of its bundle
files (what the registry stages: .json, .pt, .npz), so masks cached under one segmenter are never
served for another, whether it came from a folder or the registry. An alias is resolved to its
version first (versions never change; aliases move), and one version is pulled once per process.
A registered name is looked up in the process's MLflow store. A study settles the reference in
its driver, before any trial (`study_segmenter`): a trial runs in its own folder and process,
where a relative folder or the default store would name another segmenter, or none.

The images are segmented at the size they were loaded at (the study's `data.size`): use a
segmenter trained at a similar nucleus scale. Padding bands are excluded and every mask gets the
same quality flags as the unsupervised methods.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from .. import process_env

# the files a registered bundle holds (tracking/registry._stage_bundle)
BUNDLE_SUFFIXES = (
    ".json",
    ".pt",
    ".npz",
)
_LOADED: dict[
    tuple, tuple
] = {}  # (tracking URI, NAME/VERSION) or (folder, content hash) → (Segmenter, identity)


def bundle_identity(folder: str | Path) -> str:
    """sha256 over the bundle's own files, by name and content: equal for a folder and its registered copy."""
    from ..io import sha256_file

    h = hashlib.sha256()
    for f in sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix in BUNDLE_SUFFIXES
    ):
        h.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


def is_folder(ref: str) -> bool:
    """Does `ref` name a bundle folder (~ expanded) rather than a registered model?"""
    return Path(ref).expanduser().is_dir()


def check_ref(ref: str) -> None:
    """A ConfigError unless `ref` is a folder or has the form NAME@ALIAS / NAME/VERSION."""
    from ..errors import ConfigError

    if not is_folder(ref):
        from ..tracking.registry import REF

        if not REF.fullmatch(ref):
            raise ConfigError(
                f"masks.segmenter={ref}: no such folder, and not NAME@ALIAS or NAME/VERSION"
            )


def pinned(cfg):
    """The masks config with a NAME@ALIAS segmenter resolved to its NAME/VERSION, once: masks made
    in several calls and their cache key then name one segmenter, even if the alias moves meanwhile."""
    import dataclasses

    if not cfg.uses_segmenter or not cfg.segmenter or is_folder(cfg.segmenter):
        return cfg
    from ..tracking.registry import resolve_version

    return dataclasses.replace(cfg, segmenter=resolve_version(cfg.segmenter))


def study_segmenter(ref: str, cache: Path) -> str:
    """`masks.segmenter` as the absolute bundle folder a study's trials load (in the driver, its
    MLflow store set): a folder made absolute; NAME@ALIAS pinned to its version and pulled from the
    study's store into <cache>/segmenters/<NAME>-v<VERSION>/ (afresh: another store may hold
    another NAME/VERSION). A missing folder named like NAME/VERSION is tried in the registry and
    the error names both."""
    import shutil
    import tempfile

    from ..errors import ConfigError, CytorayError
    from ..tracking.registry import pull, resolve_version

    check_ref(ref)
    if is_folder(ref):
        return str(Path(ref).expanduser().resolve())
    version = resolve_version(ref)
    dest = Path(cache).resolve() / "segmenters" / version.replace("/", "-v")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=dest.parent) as d:
        try:
            bundle = pull(version, d)
        except CytorayError as e:
            raise ConfigError(f"masks.segmenter={ref}: no such folder, and {e}") from None
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(bundle), dest)
    # the params show the folder
    print(
        f"[study] masks.segmenter={ref}: {version}, pulled to {dest}", file=sys.stderr, flush=True
    )
    return str(dest)


def load_mask_segmenter(ref: str, tracking_uri: str | None = None):
    """(Segmenter, identity) for a bundle folder or a registered NAME@ALIAS / NAME/VERSION."""
    from .nucleus_net import load_segmenter

    if is_folder(ref):
        folder = Path(ref).expanduser().resolve()
        ident = bundle_identity(folder)
        key = (str(folder), ident)
        if key not in _LOADED:
            _LOADED[key] = (load_segmenter(folder), ident)
        return _LOADED[key]
    import tempfile

    import mlflow

    from ..tracking.mlflow_utils import store_uri
    from ..tracking.registry import pull, resolve_version

    process_env.ensure("mlflow")  # no progress bar per bundle file
    if tracking_uri:  # `cytoray segment --tracking-uri`
        mlflow.set_tracking_uri(store_uri(tracking_uri))
    # else this process's store (`cytoray train --tracking-uri`, MLFLOW_TRACKING_URI)
    uri = mlflow.get_tracking_uri()
    version = resolve_version(ref)
    key = (uri, version)
    if key not in _LOADED:
        with tempfile.TemporaryDirectory(
            prefix="cytoray-segmenter-"
        ) as d:  # nothing left behind in /tmp
            bundle = pull(version, d)
            _LOADED[key] = (load_segmenter(bundle), bundle_identity(bundle))
    return _LOADED[key]


def segmenter_reports(images: np.ndarray, cfg, batch: int = 8):
    """(bool mask, info) per uint8 image [N,S,S,3], as `nucleus_mask_report` gives them: padding
    bands excluded (masks.exclude_padding), quality flags checked with masks.max_cover/polarity."""
    from ..data.background import detect_bands
    from .params import MaskParams
    from .quality import quality_flags

    seg, ident = load_mask_segmenter(cfg.segmenter)
    # for the flags
    params = MaskParams(
        polarity=cfg.polarity, exclude_padding=cfg.exclude_padding, max_cover=cfg.max_cover
    )
    for start in range(0, len(images), batch):
        chunk = np.asarray(images[start : start + batch])
        for rgb, mask in zip(chunk, seg.masks(chunk, batch)):
            bands = detect_bands(rgb) if cfg.exclude_padding else None
            content = bands.content() if bands is not None else np.ones(rgb.shape[:2], dtype=bool)
            mask = mask & content
            info = {
                "method": "segmenter",
                "segmenter": ident,
                "padding": bands.as_dict() if bands is not None and bands.any() else None,
                "flags": quality_flags(rgb, mask, content, bands, params),
            }
            yield mask, info
