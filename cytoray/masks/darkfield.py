"""Is an image a dark field (fluorescence: a black, hueless background with bright nuclei)?

The stain masks (stain.py), the SynCGAN masks' polarity (unsupervised.py) and the quality flags
(quality.py) all ask; the answer rests on evidence a crowded brightfield tile cannot fake.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import color, filters

from .params import MaskParams

# A black floor has no hue; a stained one has. Saturation of the darkest tenth, each pixel's
# chroma (max - min channel) over its brightness floored at FLOOR_LIGHT so camera noise on
# black cannot look saturated: the stardist fluorescence micrograph 0.0, bright gray disks on a
# noisy black field ~0.15; a dense haematoxylin tile darkened until its median gray is 0.19
# still 0.45 (0.8 at median 0.29), real H&E nuclei higher. Set between the two families, not tuned.
FLOOR_LIGHT = 0.2
FLOOR_SATURATION = 0.3
# Bright objects: in a dark field the bright side of an Otsu split is in pieces (nuclei) and the
# dark side is one background; in a crowded brightfield tile the bright gaps are what connects
# (stardist micrograph: largest bright piece 0.07 of the bright pixels; dense IHC tile 0.6).
BRIGHT_PIECE_SHARE = 0.5


def dark_field_evidence(rgb: np.ndarray, content: np.ndarray, params: MaskParams) -> dict:
    """What the dark-field decision rests on, each a number in 0..1, for the per-image report:
    median and 10th-percentile gray of the content, the saturation of its darkest tenth, and the
    share of the bright side (above Otsu) held by its largest connected piece."""
    gray_img = color.rgb2gray(rgb)
    sel = content if content.any() else np.ones(content.shape, dtype=bool)
    gray = gray_img[sel]
    p10, med = (float(v) for v in np.percentile(gray, (10, 50)))
    floor = rgb[sel][gray <= p10].astype(np.float64) / 255.0
    top = floor.max(axis=1)
    sat = (
        float(((top - floor.min(axis=1)) / np.maximum(top, FLOOR_LIGHT)).mean())
        if floor.size
        else 0.0
    )
    piece = 1.0
    if np.ptp(gray) > 0:
        bright = (gray_img > filters.threshold_otsu(gray)) & sel
        lab, n = ndimage.label(bright)
        piece = float(np.bincount(lab.ravel())[1:].max() / bright.sum()) if n else 1.0
    return {
        "median_gray": med,
        "p10_gray": p10,
        "floor_saturation": sat,
        "bright_piece_share": piece,
    }


def looks_dark_field(evidence: dict, params: MaskParams) -> bool:
    """The evidence a dense brightfield tile cannot fake, all four at once: mostly dark (median
    gray under `auto_dark_background`), a black background (10th percentile under `dark_floor`),
    that background without stain hue (FLOOR_SATURATION: a crowded H&E tile's darkest pixels are
    purple nuclei), and bright objects in pieces (BRIGHT_PIECE_SHARE)."""
    return (
        evidence["median_gray"] < params.auto_dark_background
        and evidence["p10_gray"] < params.dark_floor
        and evidence["floor_saturation"] < FLOOR_SATURATION
        and evidence["bright_piece_share"] < BRIGHT_PIECE_SHARE
    )


def dark_field(rgb: np.ndarray, content: np.ndarray, params: MaskParams) -> bool:
    """Is this a dark-field (fluorescence) image: a black, hueless background with bright nuclei?

    Brightness alone cannot tell: a crowded H&E tile (nuclei nearly everywhere) is mostly dark
    with near-black nuclei, and taking it for fluorescence marks the pale gaps as nuclei (an
    inverted mask). So the decision also asks for a background without stain hue and for bright
    objects in pieces (`looks_dark_field`). params.polarity other than 'auto' decides instead.
    """
    if params.polarity != "auto":
        return params.polarity == "bright"
    return looks_dark_field(dark_field_evidence(rgb, content, params), params)
