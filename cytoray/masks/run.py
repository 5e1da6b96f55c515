"""Nucleus masks for a whole folder dataset, cached, optionally scored against ground truth.

    <data>/<class>/<name>.png            →  <out>/<class>/<name>.png     (0/255 PNG)
    <data>/<class>/masks/<name>.png      →  ground truth for --evaluate  (nonzero = nucleus)

A mask is cached under the image's sha256 plus a hash of the parameters, so a rerun (or a
second output folder over the same images) recomputes nothing that is already known.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import save_png, sha256_file, stable_hash, write_json
from ..metrics.segmentation import dice, iou
from .unsupervised import MaskParams, nucleus_mask

# Bump when nucleus_mask changes what it computes for the same parameters: old cache entries
# then stop matching instead of being served as if current.
ALGORITHM_VERSION = 1
SUMMARY_NAME = "summary.json"

# ----------------------------------------------------------------------------- listing


def _list_images(data: Path) -> list:
    """Records of every image under <data>/<class>/ (same rules as the dataset loader)."""
    from ..data.folder import scan_folder

    if not data.exists():
        raise DataError(f"{data}: folder not found; pass a dataset folder laid out as <data>/<class>/*.png")
    if not data.is_dir():
        raise DataError(f"{data}: is a file; pass the dataset folder that holds one sub-folder per class")
    # The loader's other problems (one class only, stray non-image files) do not stop masking:
    # a single class of images is a fine thing to segment.
    records, _problems = scan_folder(data)
    if not records:
        raise DataError(f"{data}: no images in <class>/ sub-folders (png, jpg, jpeg, tif, tiff, bmp); add images there")
    return records


def _out_name(rec, data: Path) -> Path:
    """<class>/<sub-folders>/<stem>.png relative to the output folder."""
    rel = rec.path.relative_to(data / rec.cls)
    return Path(rec.cls) / rel.with_suffix(".png")


def _check_unique(records: list, data: Path) -> None:
    seen: dict[Path, Path] = {}
    for rec in records:
        name = _out_name(rec, data)
        if name in seen:
            raise DataError(
                f"{rec.path}: same name as {seen[name]} apart from the extension, so both would write "
                f"{name}; rename one of them"
            )
        seen[name] = rec.path


# ----------------------------------------------------------------------------- cache


def _cached_mask(rgb_path: Path, cache_dir: Path, key: str, params: MaskParams) -> tuple[np.ndarray, bool]:
    """(mask, was_cached). Cache files are 0/255 PNGs named <image sha256>-<params hash>.png."""
    from ..data.images import read_mask, read_rgb

    entry = cache_dir / f"{sha256_file(rgb_path)}-{key}.png"
    if entry.is_file():
        try:
            return read_mask(entry), True
        except DataError:
            pass  # a damaged cache entry is recomputed, never trusted
    mask = nucleus_mask(read_rgb(rgb_path), params)
    save_png(entry, mask.astype(np.uint8) * 255)
    return mask, False


# ----------------------------------------------------------------------------- run


def run_masks(
    data: str | Path,
    out: str | Path,
    evaluate: bool = False,
    params: MaskParams | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Write an unsupervised nucleus mask for every image of a folder dataset.

    Returns a JSON-able summary: n, cache_hits, out, params, and with `evaluate` the mean
    dice/iou over the n_evaluated images that have ground truth (also per class). The
    summary is also written to <out>/summary.json. Raises DataError for a missing folder, no
    images, or `evaluate` without any ground-truth mask.
    """
    data, out = Path(data), Path(out)
    params = params or MaskParams()
    params.validate()
    records = _list_images(data)
    if out.resolve().is_relative_to(data.resolve()):
        # Masks written inside the dataset would be read back as images of a new class.
        raise DataError(f"{out}: output folder is inside the dataset folder {data}; choose an --out outside it")
    _check_unique(records, data)
    if evaluate and not any(r.mask for r in records):
        raise DataError(
            f"{data}: --evaluate needs ground-truth masks at <class>/masks/<name>.png and there are none; "
            "add them or drop --evaluate"
        )
    cache = Path(cache_dir) if cache_dir is not None else out / ".cache"
    pdict = dataclasses.asdict(params)
    key = stable_hash({"params": pdict, "algorithm": ALGORITHM_VERSION})

    hits, scores, per_image = 0, [], []
    every = max(1, len(records) // 20)  # about 20 progress lines whatever the dataset size
    for i, rec in enumerate(records, 1):
        mask, cached = _cached_mask(rec.path, cache, key, params)
        hits += cached
        name = _out_name(rec, data)
        save_png(out / name, mask.astype(np.uint8) * 255)
        row = {"image": str(rec.path), "mask": str(out / name), "class": rec.cls, "cached": cached}
        if evaluate and rec.mask is not None:
            row.update(_score(mask, rec.mask))
            scores.append((rec.cls, row["dice"], row["iou"]))
        per_image.append(row)
        if progress and (i % every == 0 or i == len(records)):
            print(f"[masks] {i}/{len(records)} {name} ({hits} cached)", file=sys.stderr, flush=True)

    summary: dict = {"n": len(records), "cache_hits": hits, "out": str(out), "params": pdict, "cache_dir": str(cache)}
    if evaluate:
        summary.update(_aggregate(scores))
    write_json(out / SUMMARY_NAME, {**summary, "images": per_image})
    return summary


# ----------------------------------------------------------------------------- scoring


def _score(pred: np.ndarray, truth_path: Path) -> dict:
    from ..data.images import read_mask

    truth = read_mask(truth_path)
    if truth.shape != pred.shape:
        raise DataError(
            f"{truth_path}: mask is {truth.shape[1]}x{truth.shape[0]} px but its image is "
            f"{pred.shape[1]}x{pred.shape[0]}; masks must match their images pixel for pixel"
        )
    return {"dice": dice(pred, truth), "iou": iou(pred, truth)}


def _aggregate(scores: list[tuple[str, float, float]]) -> dict:
    """Mean Dice/IoU over images (each image counts once), overall and per class."""
    by_class: dict[str, dict] = {}
    for cls in sorted({c for c, _, _ in scores}):
        d = [s for c, s, _ in scores if c == cls]
        j = [s for c, _, s in scores if c == cls]
        by_class[cls] = {"n": len(d), "dice": float(np.mean(d)), "iou": float(np.mean(j))}
    return {
        "n_evaluated": len(scores),
        "dice": float(np.mean([s for _, s, _ in scores])),
        "iou": float(np.mean([s for _, _, s in scores])),
        "per_class": by_class,
    }
