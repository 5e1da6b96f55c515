"""FID/KID between two image folders, one resize protocol whatever their order.

Split from `fidelity.py` (which re-exports these names); the protocol is described there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..data.images import read_rgb
from ..errors import CytorayError, DataError
from ..io import is_image_name
from .fidelity import INPUT_SIZE, _features_from_batches, fid_kid_report
from .fidelity_stats import FLOOR_SPLITS


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursive, sorted; folders named "masks" and hidden files skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found; check the path")
    for p in root.rglob("*"):  # a dangling link was skipped without a word (is_file() is False)
        if p.is_symlink() and not p.exists() and is_image_name(p):
            raise DataError(f"{p}: a symbolic link to nothing ({os.readlink(p)}); fix or remove it")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and is_image_name(p)
        and not p.name.startswith(".")  # "._x.png": macOS metadata, not images
        and "masks" not in p.relative_to(root).parts[:-1]
    )


def _load_batches(
    paths: list[Path], size: int | None, batch_size: int
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices, uint8 batch) of images read lazily, each batch holding images of one size.

    Images of a size are grouped (a batch must be one tensor); all pending groups are flushed
    once `batch_size` images wait, so memory stays at one batch however many sizes there are.
    `size`: PIL bicubic to size x size first (then every image has one size).
    """
    from PIL import Image

    pending: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}

    def flush():
        for group in pending.values():
            yield (
                [i for i, _ in group],
                torch.from_numpy(np.stack([a for _, a in group])).permute(0, 3, 1, 2),
            )
        pending.clear()

    for i, p in enumerate(paths):
        a = read_rgb(p)
        if size is not None and a.shape[:2] != (size, size):
            a = np.asarray(Image.fromarray(a).resize((size, size), Image.BICUBIC))
        pending.setdefault(a.shape[:2], []).append((i, a))
        if sum(len(g) for g in pending.values()) >= batch_size:
            yield from flush()
    yield from flush()


def folder_features(
    paths: list[Path],
    size: int | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    desc: str | None = None,
) -> np.ndarray:
    """Features of image files in their given order; each image reaches 299x299 by the extractor's
    own resize from its own size (or from size x size), whatever else is in the folder. With
    `desc`, a progress bar (stderr) counts the images."""
    from ..progress import Progress

    out = np.zeros((len(paths), 2048))
    with Progress(len(paths), desc or "", enabled=desc is not None) as bar:
        for idx, batch in _load_batches(paths, size, batch_size):
            out[idx] = _features_from_batches([batch], device)
            bar.update(len(idx))
    return out


def resize_protocol(size: int | None) -> str:
    first = f"PIL bicubic to {size}x{size}, then " if size is not None else "from its own size "
    return f"each image {first}to {INPUT_SIZE}x{INPUT_SIZE} by the extractor (TF1 bilinear, align_corners=False)"


def fid_kid_dirs(
    dir_a: str | Path,
    dir_b: str | Path,
    size: int | None = None,
    *,
    kid_subsets: int = 100,
    seed: int = 0,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    floor_splits: int = FLOOR_SPLITS,
    progress: bool = False,
    features_out: dict | None = None,
) -> dict:
    """FID/KID between two image folders (png/jpg/tif/bmp, recursive, "masks" folders skipped), read as RGB uint8.

    One protocol whatever the order: every image goes from its own size straight to the
    extractor's 299x299 input by the extractor's TF1-bilinear resize (the TF FID protocol), so a
    folder's features never depend on the other folder and FID(A, B) = FID(B, A). `size` (both
    folders alike) first resizes every image to size x size with PIL bicubic (antialiased): use it
    to compare at a generator's resolution, e.g. real 224-px cells downsampled to the 64 px the
    generator makes, so that FID does not mostly measure the missing detail. Returns
    `fid_kid_report` (figures, n1/n2, headline, each folder's real-vs-real floor, warning) plus
    dir_a, dir_b and image_resize. Print it with `describe(result, (dir_a, dir_b))`.
    """
    if size is not None and int(size) < 1:
        raise CytorayError(
            f"size={size}: must be a positive number of pixels (or None for each image's own size)"
        )
    pa, pb = list_images(dir_a), list_images(dir_b)
    for paths, d in ((pa, dir_a), (pb, dir_b)):
        if len(paths) < 2:
            raise DataError(
                f"{d}: {len(paths)} image(s) found (png/jpg/tif/bmp, "
                "'masks' folders skipped); FID/KID need at least 2"
            )
    size = None if size is None else int(size)
    fa, fb = (
        folder_features(
            p, size, batch_size, device, f"Inception features {Path(d).name}" if progress else None
        )
        for p, d in ((pa, dir_a), (pb, dir_b))
    )
    if (
        features_out is not None
    ):  # the caller's further metrics on the same features (`fid --realism`)
        features_out.update(a=fa, b=fb)
    out = fid_kid_report(
        fa, fb, kid_subsets, seed, names=(str(dir_a), str(dir_b)), floor_splits=floor_splits
    )
    out.update(dir_a=str(dir_a), dir_b=str(dir_b), image_resize=resize_protocol(size))
    return out
