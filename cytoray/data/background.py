"""Flat padding bands and scanner margins at the edges of an image.

Real folders carry frames that are not tissue: single-cell crops padded to a square with one
flat colour (Herlev-style), scanner margins, black borders from a conversion tool. A nucleus
mask that follows such an edge, or a GAN trained on framed crops, learns the frame instead of
the cells. This module finds the frames so that masks exclude them and training crops drop them.

A band is a run of rows (or columns) at an image edge, each of them flat (its pixels spread
less than `tol` grey levels, after dropping the extreme 2% that JPEG ringing produces) and of
the same colour as the outermost one. The colour may equal the glass beside it (Herlev pads
with the border colour): what gives a band away is that it has no texture at all. Rows are measured only over the part not already in a
perpendicular band, so an L-shaped frame of two colours is found too.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

EDGES = ("top", "bottom", "left", "right")
PaddingMode = Literal["crop", "keep"]
PADDING_MODES = ("crop", "keep")

# Defaults, measured on Herlev crops (JPEG q~90): padding rows spread 0-6 levels, the flattest
# rows of real glass background 9-13, so 8 separates them; a band narrower than 1% of the side
# (2 px at 224) is a JPEG edge artefact, not a frame.
# max spread (2nd..98th percentile, grey levels) of a padding row, and colour drift along the band
TOLERANCE = 8.0
MIN_WIDTH_FRAC = 0.01  # bands narrower than this fraction of the side (and < 2 px) are ignored
# content pixels this close to a band (JPEG ringing at the seam) are excluded from masks too
MARGIN_FRAC = 0.01
# content narrower than this fraction of a side means the image is (nearly) all flat
MIN_CONTENT_FRAC = 0.2


# ----------------------------------------------------------------------------- result


@dataclasses.dataclass(frozen=True)
class Bands:
    """Widths (px) of the flat band at each edge of an image of `shape`, and their colours."""

    shape: tuple[int, int]
    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0
    colours: dict = dataclasses.field(default_factory=dict)  # edge → (r, g, b) of the band

    def any(self) -> bool:
        return any(getattr(self, e) for e in EDGES)

    @property
    def flat(self) -> bool:
        """Nothing but bands: the content left is under MIN_CONTENT_FRAC of a side."""
        h, w = self.shape
        return (h - self.top - self.bottom) < MIN_CONTENT_FRAC * h or (
            w - self.left - self.right
        ) < MIN_CONTENT_FRAC * w

    def box(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the content; the whole image when it is all flat (nothing to crop to)."""
        h, w = self.shape
        if self.flat:
            return 0, h, 0, w
        return self.top, h - self.bottom, self.left, w - self.right

    def margin(self) -> int:
        return max(1, int(round(MARGIN_FRAC * min(self.shape))))

    def content(self, margin: bool = True) -> np.ndarray:
        """bool [H, W]: True where a nucleus may be (inside the content box, `margin` px off every band)."""
        h, w = self.shape
        out = np.zeros((h, w), dtype=bool)
        if self.flat:
            return out
        m = self.margin() if margin else 0
        y0, y1, x0, x1 = self.box()
        y0, y1 = y0 + (m if self.top else 0), y1 - (m if self.bottom else 0)
        x0, x1 = x0 + (m if self.left else 0), x1 - (m if self.right else 0)
        out[y0 : max(y0, y1), x0 : max(x0, x1)] = True
        return out

    def padding(self) -> np.ndarray:
        """bool [H, W]: True on band pixels."""
        h, w = self.shape
        out = np.zeros((h, w), dtype=bool)
        out[: self.top] = out[h - self.bottom :] = True
        out[:, : self.left] = out[:, w - self.right :] = True
        return out

    def describe(self) -> str:
        """'top 37 px (147,137,164), bottom 37 px (147,137,164)' or 'all flat'."""
        if self.flat:
            return "the image is one flat colour (no content)"
        parts = [
            f"{e} {getattr(self, e)} px ({','.join(str(int(c)) for c in self.colours[e])})"
            for e in EDGES
            if getattr(self, e)
        ]
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return {
            **{e: getattr(self, e) for e in EDGES},
            "flat": self.flat,
            "colours": {e: [int(c) for c in v] for e, v in self.colours.items()},
        }


# ----------------------------------------------------------------------------- detection


def _run(lines: np.ndarray, tol: float) -> tuple[int, np.ndarray]:
    """How many leading lines of `lines` [N, L, 3] form one flat band, and its colour.

    A line belongs when its per-channel 2..98 percentile spread and the drift of its median
    from the outermost line's median are both within `tol` (all lines at once, vectorised).
    """
    lo, med, hi = np.percentile(lines, (2, 50, 98), axis=1)  # each [N, 3]
    ok = ((hi - lo).max(axis=1) <= tol) & (np.abs(med - med[0]).max(axis=1) <= tol)
    n = int(np.argmin(ok)) if not ok.all() else len(ok)
    return n, med[0]


def detect_bands(
    rgb: np.ndarray, tol: float = TOLERANCE, min_width_frac: float = MIN_WIDTH_FRAC
) -> Bands:
    """Find flat bands at the four edges of an RGB uint8 image [H, W, 3] (see the module doc)."""
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    a = a[..., :3].astype(np.float32)
    h, w = a.shape[:2]
    min_w = max(2, int(round(min_width_frac * min(h, w))))
    widths = dict.fromkeys(EDGES, 0)
    colours: dict = {}
    # Two passes: rows are judged only between the side bands found so far and vice versa,
    # so a frame whose sides differ in colour (or a corner with content) is still found.
    for _ in range(2):
        x0, x1 = widths["left"], w - widths["right"]
        y0, y1 = widths["top"], h - widths["bottom"]
        cuts = {
            "top": a[: h // 2, x0:x1],
            "bottom": a[h - 1 : h // 2 - 1 : -1, x0:x1],
            "left": a[y0:y1, : w // 2].transpose(1, 0, 2),
            "right": a[y0:y1, w - 1 : w // 2 - 1 : -1].transpose(1, 0, 2),
        }
        for edge, lines in cuts.items():
            if lines.shape[0] == 0 or lines.shape[1] == 0:
                continue
            n, col = _run(lines, tol)
            if n >= min_w and n >= widths[edge]:
                widths[edge], colours[edge] = n, col
        if not any(widths.values()):
            break  # nothing at any edge: the second pass would measure the same lines
    # A run that reaches the middle from both sides means the whole image is flat.
    if (
        widths["top"] >= h // 2
        and widths["bottom"] >= h // 2
        or widths["left"] >= w // 2
        and widths["right"] >= w // 2
    ):
        return Bands((h, w), h // 2, h - h // 2, w // 2, w - w // 2, colours)
    return Bands((h, w), colours={e: c for e, c in colours.items() if widths[e]}, **widths)


def crop_padding(arr: np.ndarray, bands: Bands) -> np.ndarray:
    """The content of `arr` (image or mask of the shape `bands` was found on), margin included
    off every band so the JPEG seam goes too; the whole array when it is all flat."""
    if not bands.any() or bands.flat:
        return arr
    m = bands.margin()
    y0, y1, x0, x1 = bands.box()
    y0, y1 = y0 + (m if bands.top else 0), y1 - (m if bands.bottom else 0)
    x0, x1 = x0 + (m if bands.left else 0), x1 - (m if bands.right else 0)
    return arr[y0:y1, x0:x1]


def touches_padding(mask: np.ndarray, bands: Bands) -> bool:
    """Does a mask mark a band pixel or a pixel right next to one (8-neighbourhood)?"""
    if not bands.any():
        return False
    from scipy import ndimage

    near = ndimage.binary_dilation(bands.padding(), structure=np.ones((3, 3), bool))
    return bool((np.asarray(mask, bool) & near).any())


def check_padding_mode(mode: str, key: str = "padding") -> None:
    if mode not in PADDING_MODES:
        from ..errors import ConfigError

        raise ConfigError(
            f"{key}={mode!r}: use 'crop' (drop flat bands before "
            "resizing) or 'keep' (use images as they are)"
        )
