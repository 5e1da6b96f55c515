"""Cytology label maps: glass, cytoplasm, nucleus, from the stain step.

A binary nucleus mask leaves a mask → RGB generator to invent the cell body from nothing; with
a reconstruction loss it paints the mean colour everywhere (issue 20: blurred purple blobs on
one pink field). A label map says where the cell is: per pixel

    0 glass      bare slide around the cell (low optical density), and any flat padding band a
                 dataset's own script left at the edges (not cell; a fourth label for it taught
                 the map GANs on Herlev to draw a band at the top of every map)
    1 cytoplasm  stained content that is not nucleus: the cell body, blue, green or pink in Pap
    2 nucleus    the nucleus mask of `masks.method` (stain, syncgan, a segmenter, or ground truth)

How the cell body is found: total optical density (all stains absorb) against the slide's white
level, smoothed at the scale of a cytoplasm's texture, split by Otsu's threshold over the content that
is not nucleus. The white level is the illumination, not one image's brightest pixel (a close-up
with no glass would read its palest cytoplasm as glass): 255 by default (`masks.white: absolute`),
or (`set`) estimated over the images mapped together, per channel the median of each image's 99th
percentile. Few microscopes put bare glass at 255: Herlev's glass is ~185 grey, as dense against
255 as a close-up's cytoplasm, so 37 of 45 training maps of its normal class have no glass and no
cell outline; with `set` 5 of 45 have none. The CGAN trained on the `set` maps drew normal cells
nearer real ones but abnormal cells further (4 seeds, benchmarks/generators_real_herlev.md), so
`absolute` stays the default. `set` assumes most images show some glass (a folder of close-ups
only would take a cytoplasm's colour for the white). The lower class is glass only when it is pale
in absolute terms (`glass_od`): a close-up of one cell is all cytoplasm, and Otsu would otherwise cut it in two; and the upper
class is cytoplasm only when it is denser than the glass by `min_contrast` (else the glass's
grain would be cut in two). Specks of either
class below `min_area` of the image join their surroundings.

Quality flags (listed with the nucleus flags): `no_cytoplasm` (under 1% of the content: a bare
nucleus, or a cell body as pale as glass) and `cytoplasm_covers` (no glass at all: a close-up;
common in Herlev and not an error, but a generator then never sees the cell's outline).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from skimage import filters

from ..data.background import detect_bands

GLASS, CYTOPLASM, NUCLEUS = 0, 1, 2
NAMES = ("glass", "cytoplasm", "nucleus")
N_LABELS = len(NAMES)
# for pictures
PALETTE = np.array([[235, 235, 235], [120, 190, 120], [70, 40, 150]], dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class LabelParams:
    # Gaussian sigma / image side: evens out cytoplasm texture (2 px at 128)
    smooth_frac: float = 1 / 64
    # the lower Otsu class is glass only if its mean total OD (against the white level)
    # is below this (Herlev at 64 px against its white level: glass ~0.1-0.4)
    glass_od: float = 0.65
    # specks of glass or cytoplasm under this share of the image join their surroundings
    min_area: float = 0.002
    # the body must beat the glass by this total OD: the grain of bare glass is no cell
    min_contrast: float = 0.15


WHITES = ("set", "absolute")


def optical_density_abs(rgb: np.ndarray, white: np.ndarray | float = 255.0) -> np.ndarray:
    """Total optical density against a white level (255, or per channel; sum over R, G, B);
    pixels brighter than the white count as 0."""
    w = np.asarray(white, dtype=np.float64)
    return np.maximum(-np.log((rgb.astype(np.float64) + 1.0) / (w + 1.0)), 0.0).sum(-1)


def slide_white(images: np.ndarray, q: float = 99.0) -> np.ndarray:
    """float64 [3] white level of a set of uint8 RGB images: per channel, the median over the images
    of each one's q-th percentile (flat padding bands left out). An image with glass puts its
    percentile on the glass, a close-up on its palest cytoplasm; the median is the glass while most
    images show some."""
    per = []
    for rgb in images:
        bands = detect_bands(rgb)
        px = rgb[bands.content(margin=False)] if bands.any() else rgb.reshape(-1, 3)
        per.append(np.percentile(px.reshape(-1, 3), q, axis=0) if len(px) else np.full(3, 255.0))
    return np.median(np.asarray(per, dtype=np.float64), axis=0)


def _drop_specks(mask: np.ndarray, min_px: int) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, lab, index=np.arange(1, n + 1))
    return np.isin(lab, 1 + np.flatnonzero(sizes >= min_px))


def label_map(
    rgb: np.ndarray,
    nucleus: np.ndarray,
    params: LabelParams = LabelParams(),
    white: np.ndarray | float = 255.0,
) -> tuple[np.ndarray, list[dict]]:
    """uint8 [H, W] label map of one uint8 RGB image and its nucleus mask; and quality flags.
    `white`: the slide's white level (`slide_white` of the images mapped together, or 255)."""
    bands = detect_bands(rgb)
    content = bands.content(margin=False) if bands.any() else np.ones(rgb.shape[:2], dtype=bool)
    out = np.full(rgb.shape[:2], GLASS, dtype=np.uint8)  # padding bands stay glass
    nucleus = nucleus & content
    body = content & ~nucleus
    flags: list[dict] = []
    if body.sum() >= 16:
        # smoothed over the body alone (normalised
        # convolution): the dark nucleus must not bleed a rim
        sigma = max(0.5, params.smooth_frac * min(rgb.shape[:2]))
        od = filters.gaussian(optical_density_abs(rgb, white) * body, sigma) / np.maximum(
            filters.gaussian(body.astype(float), sigma), 1e-6
        )
        vals = od[body]
        t = filters.threshold_otsu(vals) if np.ptp(vals) > 1e-6 else float(vals.max()) + 1.0
        low, high = vals[vals <= t], vals[vals > t]
        pale = low.size and float(low.mean()) < params.glass_od
        if pale and high.size and float(high.mean() - low.mean()) >= params.min_contrast:
            cyto = body & (od > t)
        elif pale:
            cyto = np.zeros_like(body)  # one pale class: bare glass around the nucleus
        else:
            cyto = body.copy()  # no pale class: a close-up, all cell body
        min_px = max(1, int(params.min_area * rgb.shape[0] * rgb.shape[1]))
        cyto = _drop_specks(cyto, min_px) | (body & ~_drop_specks(body & ~cyto, min_px))
        # the cell body surrounds its nucleus: glass enclosed by cytoplasm and nucleus is cytoplasm
        cyto |= body & ndimage.binary_fill_holes(cyto | nucleus)
        out[cyto] = CYTOPLASM
    out[nucleus] = NUCLEUS
    n_content = max(int(content.sum()), 1)
    share = float((out == CYTOPLASM).sum()) / n_content
    if share < 0.01:
        flags.append({"flag": "no_cytoplasm", "reason": f"cytoplasm is {share:.1%} of the content"})
    if not (out == GLASS).any():
        flags.append(
            {
                "flag": "cytoplasm_covers",
                "reason": "no glass: cell body (or nucleus) covers the content",
            }
        )
    return out, flags


def label_maps(
    images: np.ndarray,
    nuclei: np.ndarray,
    params: LabelParams = LabelParams(),
    white: str = "absolute",
) -> tuple[np.ndarray, list[list[dict]]]:
    """uint8 [N, H, W] label maps of uint8 [N, H, W, 3] images with bool [N, H, W] nucleus masks;
    `white`: set (the white level estimated over these images, `slide_white`) or absolute (255)."""
    if white not in WHITES:
        raise ValueError(f"white={white!r}: use one of {', '.join(WHITES)}")
    level = slide_white(images) if white == "set" and len(images) else 255.0
    maps = np.zeros(nuclei.shape, dtype=np.uint8)
    flags = []
    for i, (img, nuc) in enumerate(zip(images, nuclei)):
        maps[i], f = label_map(img, nuc, params, level)
        flags.append(f)
    return maps, flags


# ----------------------------------------------------------------------------- region colours


def region_colours(images: np.ndarray, maps: np.ndarray, n_labels: int = N_LABELS) -> np.ndarray:
    """float32 [N, K, 3] mean RGB (0..255) of each label region; a label an image lacks takes the
    image's mean colour (it paints nothing, but a sampled code stays a plausible colour)."""
    out = np.zeros((len(images), n_labels, 3), dtype=np.float32)
    for i, (img, m) in enumerate(zip(images, maps)):
        mean = img.reshape(-1, 3).mean(0)
        for k in range(n_labels):
            sel = m == k
            out[i, k] = img[sel].mean(0) if sel.any() else mean
    return out


def paint(maps: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """float32 [N, 3, H, W] in [-1, 1]: every label region filled with its colour (a flat rendering
    of the cell that the generator gives texture, outlines and chromatin)."""
    idx = maps.astype(np.int64)
    rgb = np.take_along_axis(colours[:, None, None, :, :], idx[:, :, :, None, None], axis=3)[
        :, :, :, 0, :
    ]
    return (rgb.transpose(0, 3, 1, 2) / 127.5 - 1.0).astype(np.float32)
