"""One image's nucleus mask by the chosen unsupervised method (stain-aware, or the SynCGAN paper's),
with what a report needs: the padding bands, the polarity, and the quality flags."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..data.background import detect_bands
from .params import MaskParams
from .quality import quality_flags
from .stain import stain_mask
from .unsupervised import as_rgb, syncgan_mask


def nucleus_mask_report(
    rgb: np.ndarray, params: MaskParams | None = None, method: str | None = None
) -> tuple[np.ndarray, dict]:
    """`nucleus_mask` plus what a report needs: the padding bands found, the polarity used,
    and quality flags (empty, inverted, covers too much, touches padding), each with its reason."""
    params = params or MaskParams()
    if method is not None:
        params = dataclasses.replace(params, method=method)
    params.validate()
    rgb = as_rgb(rgb)
    bands = detect_bands(rgb) if params.exclude_padding else None
    content = bands.content() if bands is not None else np.ones(rgb.shape[:2], dtype=bool)
    if params.method == "stain":
        mask, info = stain_mask(rgb, content, params)
    else:
        mask, info = syncgan_mask(rgb, params) & content, {}
    info["method"] = params.method
    info["padding"] = bands.as_dict() if bands is not None and bands.any() else None
    info["flags"] = quality_flags(rgb, mask, content, bands, params)
    return mask, info


def nucleus_mask(
    rgb: np.ndarray, params: MaskParams | None = None, method: str | None = None
) -> np.ndarray:
    """Unsupervised nucleus mask of one image: uint8 HxW or HxWx3 in, bool HxW out (True = nucleus).

    `method` ("stain" | "syncgan") overrides `params.method`. Padding bands are never marked
    (unless params.exclude_padding is False).
    """
    return nucleus_mask_report(rgb, params, method)[0]
