"""A real micrograph with real nucleus masks, for checking the unsupervised masks offline.

The stardist wheel ships `img2d.tif` (fluorescence nuclei, 512x512, 16-bit) with its
hand-checked instance labels `mask2d.tif`. cytoray installs stardist with --no-deps only for
these files, so they are located through the package metadata and never imported (importing
stardist would pull in TensorFlow).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np

from ..errors import DataError

# ----------------------------------------------------------------------------- locate

STARDIST_IMAGE = "stardist/data/images/img2d.tif"
STARDIST_MASK = "stardist/data/images/mask2d.tif"


def stardist_file(rel: str) -> Path:
    """Path of a data file inside the installed stardist distribution (no import)."""
    try:
        dist = importlib.metadata.distribution("stardist")
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            "stardist is not installed, so its reference image is missing; "
            "run `pip install --no-deps stardist==0.9.2` (only its data files are used)"
        ) from None
    path = Path(dist.locate_file(rel))
    if not path.is_file():
        raise DataError(
            f"{path}: not in the installed stardist {dist.version}; "
            "reinstall stardist==0.9.2 with --no-deps"
        )
    return path


# ----------------------------------------------------------------------------- load


def percentile_uint8(arr: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Any-depth intensities → uint8 by percentiles (the usual microscopy normalisation).

    Full-range scaling would leave a 16-bit fluorescence image that uses 0..235 nearly black.
    """
    a = np.asarray(arr, dtype=np.float64)
    lo, hi = np.percentile(a, (low, high))
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.rint(np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def stardist_reference() -> tuple[np.ndarray, np.ndarray]:
    """stardist's `img2d.tif` as RGB uint8 [H, W, 3] and its nucleus mask as bool [H, W].

    Raises DataError if stardist is not installed or its files are unreadable.
    """
    import tifffile

    img_path, mask_path = stardist_file(STARDIST_IMAGE), stardist_file(STARDIST_MASK)
    try:
        img = np.squeeze(tifffile.imread(img_path))
        labels = np.squeeze(tifffile.imread(mask_path))
    except Exception as e:  # tifffile raises several types for damaged files
        raise DataError(
            f"{img_path.parent}: unreadable stardist TIFF "
            f"({e}); reinstall stardist==0.9.2 with --no-deps"
        ) from None
    if img.ndim != 2 or labels.shape != img.shape:
        raise DataError(
            f"{img_path}: expected a 2-D image and a label image "
            f"of the same shape, got {img.shape} and {labels.shape}"
        )
    gray = percentile_uint8(img)
    return np.repeat(gray[..., None], 3, axis=-1), labels > 0
