"""The refined-simulation nucleus segmenter (Hou et al. 2019) as a method of benchmarks/real_data.py.

A segmenter is either given (`--segmenter FOLDER` or NAME@ALIAS, pulled from the MLflow store
once, in the driver) and scored on every H&E set, or trained here for each H&E set with the OTHER
set(s) as its reference (`--train-segmenter`): their images are the unlabelled style/texture
reference of the refined simulation, and their masks only choose the best epoch (validation
Dice), so the figure on a set never saw that set's images or masks (leave-one-set-out).

Cheapest honest CPU training, as the refined-segmentation study does it (its defaults:
patch 32, pool 256, 1 discriminator + 6 joint + 4 segmenter epochs, widths 16), with the real
images at a working scale where nuclei are a few pixels wide (0.25: both dev sets are 40x; a
BreCaHAD nucleus ~5 px in radius) and at most `max_tiles` tiles of each kind, so one segmenter
trains in a few CPU minutes. Images are segmented whole at the bundle's scale
(`Segmenter.segment_image`), the mask resized back; padding bands are excluded and the same
quality flags as the other methods are checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

SCALE = 0.25  # native → working resolution: both dev sets are 40x; nuclei ~5 px radius, CPU-sized (the study's default)
TILE = 64  # tile side (px, after scaling): small MoNuSAC images (≥ 109 px → 27 px) still give none; the rest give several


def tiles_of(
    root: Path, pairs: list, read_truth, scale: float, tile: int, max_tiles: int, seed: int = 0
):
    """An ImageSet of `tile` px tiles (with masks) cut from the scaled images of a folder's
    (image, mask) pairs; images smaller than one tile are skipped (MoNuSAC has 100 px images).
    At most `max_tiles`, a seeded draw over all tiles."""
    from PIL import Image

    from cytoray.data.folder import ImageSet
    from cytoray.data.images import read_rgb
    from cytoray.data.refsim import cut_tiles

    imgs, masks, names, groups = [], [], [], []
    for path, gt in pairs:
        rgb = read_rgb(path)
        h, w = rgb.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC))
        m = (
            np.asarray(
                Image.fromarray(read_truth(gt).astype(np.uint8) * 255).resize(size, Image.BILINEAR)
            )
            > 127
        )
        for y, x, t in cut_tiles(small, tile):
            imgs.append(t)
            masks.append(m[y : y + tile, x : x + tile])
            names.append(f"{path.name}#{y},{x}")
            groups.append(path.name)
    if not imgs:
        sys.exit(f"{root}: no image is {tile / scale:.0f} px on a side; lower --seg-tile")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(imgs))[:max_tiles])
    images = np.stack([imgs[i] for i in keep])
    return ImageSet(
        images=images,
        labels=np.zeros(len(keep), np.int64),
        class_names=("he",),
        names=[names[i] for i in keep],
        sha256=[hashlib.sha256(t.tobytes()).hexdigest() for t in images],
        masks=np.stack([masks[i] for i in keep]),
        groups=[groups[i] for i in keep],
        source=str(root),
    )


def train_segmenter(
    reference: dict[Path, list],
    read_truth,
    out: Path,
    scale: float,
    tile: int,
    max_tiles: int,
    epochs: tuple[int, int],
) -> Path:
    """A segmenter bundle folder trained on refined simulation with `reference` folders' images as
    the style/texture reference (masks dropped) and their masks for the best-epoch choice."""
    from cytoray.data.folder import ImageSet
    from cytoray.generators.refined_sim import RefinedSim, RefinedSimConfig, ScheduleConfig
    from cytoray.io import stable_hash
    from cytoray.masks.nucleus_net import write_segmenter_bundle
    from cytoray.training.config import RunConfig

    t0 = time.perf_counter()
    sets = [
        tiles_of(r, pairs, read_truth, scale, tile, max_tiles) for r, pairs in reference.items()
    ]
    ref = (
        sets[0]
        if len(sets) == 1
        else ImageSet(
            images=np.concatenate([s.images for s in sets]),
            labels=np.concatenate([s.labels for s in sets]),
            class_names=("he",),
            names=sum((s.names for s in sets), []),
            sha256=sum((s.sha256 for s in sets), []),
            masks=np.concatenate([s.masks for s in sets]),
            groups=sum((s.groups for s in sets), []),
            source="+".join(map(str, reference)),
        )
    )
    # Tiles split by source image: 3/4 style reference (masks dropped), 1/4 validation (best epoch).
    names = sorted(set(ref.groups))
    val_groups = set(np.random.default_rng(0).permutation(names)[: max(1, len(names) // 4)])
    val_idx = [i for i, g in enumerate(ref.groups) if g in val_groups]
    train = dataclasses.replace(
        ref.subset([i for i, g in enumerate(ref.groups) if g not in val_groups]), masks=None
    )
    val = ref.subset(val_idx)
    joint, seg = epochs
    cfg = RefinedSimConfig(schedule=ScheduleConfig(joint_epochs=joint, segmenter_epochs=seg))
    key = stable_hash({"train": train.sha256, "val": val.sha256})
    print(
        f"[segmenter] reference {ref.source}: {len(train)} style tiles, {len(val)} validation tiles ({tile} px at scale {scale})",
        file=sys.stderr,
        flush=True,
    )
    bundle, _ = RefinedSim.train(
        train, val, cfg, out / "bundle", out / "cache", key, RunConfig(checkpoint_every=100)
    )
    gen = RefinedSim.load(bundle)
    threshold = cfg.segmenter.threshold
    folder = write_segmenter_bundle(
        out / "segmenter",
        gen.segmenter.state_dict(),
        gen.meta["segmenter_kwargs"],
        threshold,
        scale,
        {
            "trained_on": "refined simulation (Hou et al. 2019)",
            "reference": [str(r) for r in reference],
            "best_epoch": gen.meta.get("best_epoch"),
            "best_metrics": gen.meta.get("best_metrics"),
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )
    print(
        f"[segmenter] trained in {time.perf_counter() - t0:.0f}s, best epoch {gen.meta.get('best_epoch')} "
        f"{gen.meta.get('best_metrics')}: {folder}",
        file=sys.stderr,
        flush=True,
    )
    return folder


def resolve(ref: str, out: Path) -> str:
    """A bundle folder for `--segmenter`: a folder as it is; NAME@ALIAS or NAME/VERSION pulled from
    this process's MLflow store into <out>/segmenters/ (the image workers then load a folder)."""
    from cytoray.errors import CytorayError
    from cytoray.masks.segmenter import study_segmenter

    try:
        return study_segmenter(ref, out)
    except CytorayError as e:
        sys.exit(f"--segmenter {ref}: {e}")


def segmenter_mask(folder: str, rgb: np.ndarray, bands) -> tuple[np.ndarray, dict]:
    """(mask, report) of the segmenter bundle at `folder` on one native-resolution image."""
    from cytoray.masks.params import MaskParams
    from cytoray.masks.quality import quality_flags
    from cytoray.masks.segmenter import load_mask_segmenter

    seg, ident = load_mask_segmenter(folder)
    content = bands.content()
    mask = seg.segment_image(rgb) & content
    return mask, {
        "flags": quality_flags(rgb, mask, content, bands, MaskParams()),
        "segmenter": ident[:12],
    }


def segmenter_folders(
    a, folders: list[tuple[str, Path]], methods: list[str], list_pairs, read_truth
) -> dict[str, str]:
    """{section: segmenter bundle folder}: the given one for every section, or (--train-segmenter)
    for each H&E section one trained with the other H&E folders as reference (none for --cyto)."""
    if "segmenter" not in methods:
        return {}
    if a.segmenter:
        folder = resolve(a.segmenter, a.out)
        return {name: folder for name, _ in folders}
    he = [(n, r) for n, r in folders if n.startswith("he")]
    joint, seg = (int(v) for v in a.seg_epochs.split(","))
    out = {}
    for name, root in he:
        others = {r: list_pairs(r) for n, r in he if n != name}
        dest = a.out / f"segmenter_for_{name}"
        # One segmenter per working scale; the one with the best validation Dice on the reference set(s) is used.
        scales = [float(v) for v in (a.seg_scale or str(SCALE)).split(",")]
        made = {
            sc: train_segmenter(
                others,
                read_truth,
                dest / f"scale_{sc:g}",
                sc,
                a.seg_tile or TILE,
                a.seg_tiles,
                (joint, seg),
            )
            for sc in scales
        }
        val = {
            sc: json.loads((f / "segmenter.json").read_text())["best_metrics"]["val_dice"]
            for sc, f in made.items()
        }
        best = max(val, key=val.get)
        print(
            f"[segmenter] for {name}: validation Dice on the reference by scale {val}: scale {best:g} chosen",
            file=sys.stderr,
            flush=True,
        )
        out[name] = str(made[best])
    return out


def segmenter_table(report: dict) -> str:
    """The trained segmenters' leave-one-set-out row per H&E set (each trained on the other set's images)."""
    lines = [
        "leave-one-set-out: segmenter trained on refined simulation with the other set(s) as reference",
        "| scored on | reference | Dice | IoU | Otsu-H Dice | margin | wins | inverted | empty | worst (<0.3, Otsu>0.5) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in (n for n in report if n.startswith("he") and "segmenter" in report[n]["summary"]):
        s, floor = report[name]["summary"]["segmenter"], report[name]["summary"]["otsu_h"]
        others = ", ".join(n for n in report if n.startswith("he") and n != name)
        lines.append(
            f"| {name} | {others} | {s['dice']:.3f} | {s['iou']:.3f} | {floor['dice']:.3f} | {s['dice'] - floor['dice']:+.3f} | "
            f"{s['wins']}/{s['n']} ({s['wins'] / s['n']:.0%}) | {s['flag_inverted']} | {s['flag_empty']} | {s['worst']} |"
        )
    return "\n".join(lines)
