"""Nucleus masks for a whole folder dataset, cached, optionally scored against ground truth.

    <data>/<class>/<name>.png            →  <out>/<class>/<name>.png     (0/255 PNG)
    <data>/<class>/masks/<name>.png      →  ground truth for --evaluate  (nonzero = nucleus)

A mask is cached under the image's sha256 plus a hash of the parameters (method included),
so a rerun (or a second output folder over the same images) recomputes nothing already known.
Every image gets quality flags (empty, inverted, covers, touches_padding; see quality.py) and,
with ground truth, Dice/IoU; an image fails when it has a flag or its Dice is under
`fail_dice`. The summary gives the share that fail, so a method is chosen by measurement.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import save_png, sha256_file, stable_hash, write_json
from ..metrics.segmentation import dice, iou
from .nucleus import nucleus_mask_report
from .params import MaskParams
from .quality import FLAGS

# Bump when nucleus_mask changes what it computes for the same parameters: old cache entries
# then stop matching instead of being served as if current.
ALGORITHM_VERSION = 3
SUMMARY_NAME = "summary.json"
FAIL_DICE = 0.3  # an image whose mask scores under this Dice against ground truth has failed

# ----------------------------------------------------------------------------- listing


def _list_images(data: Path) -> list:
    """Records of every image under <data>/<class>/ (same rules as the dataset loader)."""
    from ..data.folder import scan_folder

    if not data.exists():
        raise DataError(
            f"{data}: folder not found; pass a dataset folder laid out as <data>/<class>/*.png"
        )
    if not data.is_dir():
        raise DataError(
            f"{data}: is a file; pass the dataset folder that holds one sub-folder per class"
        )
    # The loader's other problems (one class only, stray non-image files) do not stop masking:
    # a single class of images is a fine thing to segment.
    records, _problems = scan_folder(data)
    if not records:
        raise DataError(
            f"{data}: no images in <class>/ sub-folders (png, "
            "jpg, jpeg, tif, tiff, bmp); add images there"
        )
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
                f"{rec.path}: same name as {seen[name]} apart from the "
                f"extension, so both would write {name}; rename one of them"
            )
        seen[name] = rec.path


# ----------------------------------------------------------------------------- cache


def _cached_mask(
    rgb_path: Path, cache_dir: Path, key: str, params: MaskParams
) -> tuple[np.ndarray, dict, bool]:
    """(mask, report, was_cached). Cache entries: <image sha256>-<params hash>.png (0/255) and
    .json (flags, padding, polarity), so a cached image is not even read again."""
    from ..data.images import read_mask, read_rgb

    entry = cache_dir / f"{sha256_file(rgb_path)}-{key}.png"
    side = entry.with_suffix(".json")
    if entry.is_file() and side.is_file():
        try:
            return read_mask(entry), json.loads(side.read_text()), True
        except (DataError, ValueError, OSError):
            pass  # a damaged cache entry is recomputed, never trusted
    mask, info = nucleus_mask_report(read_rgb(rgb_path), params)
    save_png(entry, mask.astype(np.uint8) * 255)
    write_json(side, info)
    return mask, info, False


# ----------------------------------------------------------------------------- run


def run_masks(
    data: str | Path,
    out: str | Path,
    evaluate: bool = False,
    params: MaskParams | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    method: str | None = None,
    fail_dice: float = FAIL_DICE,
) -> dict:
    """Write a nucleus mask for every image of a folder dataset (`method` overrides params.method).

    Returns a JSON-able summary: n, cache_hits, out, method, params, flags (count per flag),
    failed / failed_share (images with a flag, or with Dice < fail_dice), padded (images with
    padding bands), failures (image + reasons), and with `evaluate` the mean dice/iou and
    dice_min over the n_evaluated images that have ground truth (also per class). The summary
    plus one row per image is written to <out>/summary.json. Raises DataError for a missing
    folder, no images, or `evaluate` without any ground-truth mask.
    """
    data, out = Path(data), Path(out)
    params = params or MaskParams()
    if method is not None:
        params = dataclasses.replace(params, method=method)
    params.validate()
    records = _list_images(data)
    if out.resolve().is_relative_to(data.resolve()):
        # Masks written inside the dataset would be read back as images of a new class.
        raise DataError(
            f"{out}: output folder is inside the dataset folder {data}; choose an --out outside it"
        )
    _check_unique(records, data)
    if evaluate and not any(r.mask for r in records):
        raise DataError(
            f"{data}: --eval needs ground-truth masks at <class>/masks/<name>.png "
            "and there are none; add them or drop --eval"
        )
    cache = Path(cache_dir) if cache_dir is not None else out / ".cache"
    pdict = dataclasses.asdict(params)
    key = stable_hash({"params": pdict, "algorithm": ALGORITHM_VERSION})

    from ..progress import Progress

    bar = Progress(len(records), "[masks]", enabled=progress)
    # The masks and summary.json go to a staging folder and are moved
    # into place together at the end (renames need no space): a full disk
    # or Ctrl-C leaves --out as it was, plus complete cache entries.
    import shutil
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".incoming-", dir=out))
    try:
        return _masks_into(
            stage, out, data, records, cache, key, params, evaluate, fail_dice, bar, progress
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _masks_into(
    stage: Path,
    out: Path,
    data: Path,
    records,
    cache: Path,
    key: str,
    params,
    evaluate: bool,
    fail_dice: float,
    bar,
    progress: bool,
) -> dict:
    import os

    pdict = dataclasses.asdict(params)
    hits, scores, per_image = 0, [], []
    for rec in records:
        mask, info, cached = _cached_mask(rec.path, cache, key, params)
        hits += cached
        name = _out_name(rec, data)
        save_png(stage / name, mask.astype(np.uint8) * 255)
        row = {
            "image": str(rec.path),
            "mask": str(out / name),
            "class": rec.cls,
            "cached": cached,
            "flags": info["flags"],
            "padding": info.get("padding"),
            "polarity": info.get("polarity"),
            "dark_field": info.get("dark_field"),
            "decision": info.get("decision"),
        }
        if evaluate and rec.mask is not None:
            row.update(_score(mask, rec.mask))
            scores.append((rec.cls, row["dice"], row["iou"]))
        row["fail"] = bool(row["flags"]) or row.get("dice", 1.0) < fail_dice
        per_image.append(row)
        bar.update()
    bar.close()
    if progress:
        print(
            f"[masks] {len(records)}/{len(records)} images masked ({hits} from the cache)",
            file=sys.stderr,
            flush=True,
        )

    failed = [r for r in per_image if r["fail"]]
    summary: dict = {
        "n": len(records),
        "cache_hits": hits,
        "out": str(out),
        "method": params.method,
        "params": pdict,
        "cache_dir": str(cache),
        "fail_dice": fail_dice,
        "flags": {
            f: sum(any(x["flag"] == f for x in r["flags"]) for r in per_image) for f in FLAGS
        },
        "padded": sum(1 for r in per_image if r["padding"]),
        "failed": len(failed),
        "failed_share": len(failed) / len(per_image),
        "failures": [{"image": r["image"], "reasons": _reasons(r, fail_dice)} for r in failed],
        "decisions": {
            "disagreed": sum(
                1 for r in per_image if (r["decision"] or {}).get("rule", "agree") != "agree"
            ),
            "chose_otsu": sum(1 for r in per_image if (r["decision"] or {}).get("chose") == "otsu"),
        },
    }
    if evaluate:
        summary.update(_aggregate(scores))
    write_json(stage / SUMMARY_NAME, {**summary, "images": per_image})
    files = sorted(p for p in stage.rglob("*") if p.is_file() and p != stage / SUMMARY_NAME)
    for f in [*files, stage / SUMMARY_NAME]:  # the summary last: it describes the masks beside it
        dest = out / f.relative_to(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    return summary


def _reasons(row: dict, fail_dice: float) -> list[str]:
    out = [f"{f['flag']}: {f['reason']}" for f in row["flags"]]
    if row.get("dice", 1.0) < fail_dice:
        out.append(f"dice {row['dice']:.3f} < {fail_dice:g}")
    return out


def format_summary(summary: dict, images: list[dict] | None = None) -> str:
    """Text report for `cytoray masks`: per-image Dice/IoU, the flag counts, the failure share
    and each failure's reasons. `images`: the per-image rows (default: read from the summary.json
    that run_masks wrote next to the masks)."""
    if images is None:
        try:
            images = json.loads((Path(summary["out"]) / SUMMARY_NAME).read_text())["images"]
        except (OSError, ValueError, KeyError):
            images = []
    lines = [
        f"{summary['n']} masks ({summary['method']}) in {summary['out']} ({summary['cache_hits']} "
        f"from cache, {summary['padded']} images with padding bands excluded)"
    ]
    for r in images or []:
        if "dice" in r:
            lines.append(
                f"  {Path(r['image']).name:<40} dice {r['dice']:.3f} "
                f" iou {r['iou']:.3f}{'  FAIL' if r['fail'] else ''}"
            )
    if "dice" in summary:
        lines.append(
            f"dice {summary['dice']:.3f} (min {summary['dice_min']:.3f})  iou "
            f"{summary['iou']:.3f} over {summary['n_evaluated']} images with ground truth"
        )
        for c, s in summary["per_class"].items():
            lines.append(f"  {c:<20} n={s['n']:<5} dice {s['dice']:.3f}  iou {s['iou']:.3f}")
    flags = ", ".join(f"{k} {v}" for k, v in summary["flags"].items() if v) or "none"
    lines.append(
        f"failed: {summary['failed']}/{summary['n']} "
        f"({summary['failed_share']:.0%}); flags: {flags}"
    )
    if dec := summary.get("decisions"):
        lines.append(
            f"stain vs Otsu disagreed on {dec['disagreed']} image(s); the rule chose "
            f"Otsu's mask on {dec['chose_otsu']} (per image: 'decision' in {SUMMARY_NAME})"
        )
    for f in summary["failures"][:20]:
        lines.append(f"  FAIL {f['image']}: {'; '.join(f['reasons'])}")
    if len(summary["failures"]) > 20:
        lines.append(
            f"  ... and {len(summary['failures']) - 20} "
            f"more in {Path(summary['out']) / SUMMARY_NAME}"
        )
    return "\n".join(lines)


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
        "dice_min": float(np.min([s for _, s, _ in scores])),
        "iou": float(np.mean([s for _, _, s in scores])),
        "per_class": by_class,
    }
