"""Reading images from disk into RGB uint8, whatever they were (grayscale, RGBA, palette, 16-bit).

Every failure is a `DataError` that names the file and says what to do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

# A truncated file must be an error, never a silently half-grey image.
Image.LOAD_TRUNCATED_IMAGES = False


# The pixel limit: PIL's own default (89 Mpx) warns and its 2x hard limit
# raises a traceback; a 68-byte PNG can claim 100000 x 100000. Cells and
# tiles are far below 10000 x 10000 (100 Mpx, 300 MB as RGB); larger files
# are refused by their header, before decoding. A setting, for whole slides.
PIXELS_ENV = "CYTORAY_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000


def max_image_pixels() -> int:
    import os

    raw = os.environ.get(PIXELS_ENV, "")
    try:
        return max(1, int(float(raw))) if raw.strip() else DEFAULT_MAX_PIXELS
    except ValueError:
        raise DataError(
            f"{PIXELS_ENV}={raw!r}: give a number of pixels (default {DEFAULT_MAX_PIXELS})"
        ) from None


def check_pixels(path: Path, w: int, h: int) -> None:
    limit = max_image_pixels()
    if w * h > limit:
        raise DataError(
            f"{path}: {w}x{h} px is over the {limit} px limit (a decompression bomb, "
            f"or a whole slide); tile it into smaller images, or raise {PIXELS_ENV}"
        )


def _open_checked(path: Path):
    """Image.open with the pixel limit read from the header, before anything is decoded."""
    Image.MAX_IMAGE_PIXELS = None  # the check below names the file and the setting instead
    im = Image.open(path)
    try:
        check_pixels(path, *im.size)
    except DataError:
        im.close()
        raise
    return im


def _tiff_shape_check(path: Path) -> None:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        shape = tf.pages[0].shape
    hw = [d for d in shape if d > 4][:2] or [1, 1]
    check_pixels(path, hw[-1], hw[0])


def check_min_side(paths, min_side: int, why: str) -> None:
    """Every image at least `min_side` px a side, read from the headers only (a 5x5 px image
    crashed `masks` deep inside the segmentation with a ValueError)."""
    for p in paths:
        try:
            with _open_checked(Path(p)) as im:
                w, h = im.size
        except (OSError, SyntaxError, ValueError):
            continue  # unreadable: the reader names it with its own message
        if min(w, h) < min_side:
            raise DataError(
                f"{p}: image is {w}x{h} px; {why} needs at least "
                f"{min_side}x{min_side}; remove it or use a larger crop"
            )


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale integer/float data of any depth to uint8 (16-bit microscopy, float TIFFs)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer) and arr.max(initial=0) > 255:
        # Full-range scaling keeps relative intensities (16-bit → 8-bit).
        hi = 65535.0 if arr.max() > 4095 else 4095.0
        a = a / hi * 255.0
    elif np.issubdtype(arr.dtype, np.floating) and a.max(initial=0) <= 1.0:
        a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    arr = tifffile.imread(path)
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar CHW → HWC
    return arr


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]. Raises DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBomb/EXIF chatter
            with _open_checked(path) as im:
                im.load()  # decode now: truncation shows here, not later
                arr = _pil_to_rgb(im)
    except UnidentifiedImageError:
        raise DataError(
            f"{path}: not a readable image; remove it or replace it with a valid PNG/JPEG/TIFF/BMP"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                _tiff_shape_check(path)
            except DataError:
                raise
            except Exception:
                pass  # not even a TIFF header: the read below says so
            try:
                arr = _array_to_rgb(_read_tiff(path))
            except Exception:
                raise DataError(
                    f"{path}: corrupt or unsupported TIFF ({e}); re-export it or remove it"
                ) from None
        else:
            raise DataError(
                f"{path}: corrupt or truncated image ({e}); re-export it or remove it"
            ) from None
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise DataError(
            f"{path}: image is {arr.shape[1]}x{arr.shape[0]} px, too small to use; remove it"
        )
    return arr


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_rgb(np.asarray(im))
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        # Composite transparency on white (slide background) rather than black.
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    arr = _to_uint8(np.asarray(arr))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    elif arr.ndim == 3 and arr.shape[-1] == 2:
        arr = np.repeat(arr[..., :1], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"unsupported image shape {arr.shape}")
    return np.ascontiguousarray(arr)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a nucleus mask (any image; nonzero = nucleus) as bool [H, W]."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            _tiff_shape_check(path)
            arr = _read_tiff(path)
        else:
            with _open_checked(path) as im:
                im.load()
                arr = np.asarray(im)
    except DataError:
        raise
    except Exception as e:
        raise DataError(
            f"{path}: unreadable mask ({e}); re-export it as PNG (0 = background, >0 = nucleus)"
        ) from None
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    return arr > 0


def fit_square(arr: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize the shorter side to `size` and centre-crop to size x size (keeps aspect ratio)."""
    h, w = arr.shape[:2]
    if (h, w) == (size, size):
        return arr
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    im = Image.fromarray(arr.astype(np.uint8) * (255 if arr.dtype == bool else 1))
    im = im.resize((nw, nh), Image.NEAREST if nearest else Image.BICUBIC, reducing_gap=None)
    out = np.asarray(im)
    top, left = (nh - size) // 2, (nw - size) // 2
    out = out[top : top + size, left : left + size]
    return out > 127 if arr.dtype == bool else np.ascontiguousarray(out)
