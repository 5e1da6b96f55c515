"""Per-image quality flags for a nucleus mask, each with the reason, so a failed mask is named
in the report instead of silently priming a generator.

    empty            no nucleus pixel in the content
    inverted         the mask is paler in haematoxylin (or, in a dark field, darker) than the rest:
                     it marks background, not nuclei
    covers           the mask covers more than `max_cover` of the content
    touches_padding  a mask pixel lies on, or next to, a flat padding band

The checks use only the image and the mask (no ground truth), so they run on every user folder.
"""

from __future__ import annotations

import numpy as np
from skimage import color

# An inverted mask is one whose nuclei are not denser than what it leaves out; a margin keeps
# a real but faint contrast (pale nuclei on pale cytoplasm) from being called inverted.
INVERSION_MARGIN = 0.02  # optical-density units (haematoxylin) or 0..1 gray (dark field)

FLAGS = ("empty", "inverted", "covers", "touches_padding")


def _signal(rgb: np.ndarray, content: np.ndarray, params, bright: bool) -> np.ndarray:
    """A method-independent nucleus signal: haematoxylin density (the stain's own deconvolution,
    unsmoothed), or brightness in a dark field."""
    from .stain import haematoxylin

    if bright:
        return color.rgb2gray(rgb)
    return haematoxylin(rgb, content, params)[0]


def quality_flags(rgb: np.ndarray, mask: np.ndarray, content: np.ndarray, bands, params) -> list[dict]:
    """[{'flag': name, 'reason': text}] for one image's mask (empty list = nothing suspect)."""
    from ..data.background import touches_padding
    from .stain import dark_field

    flags: list[dict] = []
    n_content = int(content.sum())
    inside = mask & content
    if bands is not None and bands.flat:
        return [{"flag": "empty", "reason": "the image is one flat colour; there is nothing to segment"}]
    if not inside.any():
        flags.append({"flag": "empty", "reason": "no nucleus found; check the stain (haematoxylin) or the method"})
    else:
        frac = inside.sum() / max(n_content, 1)
        if frac > params.max_cover:
            flags.append({"flag": "covers", "reason": f"mask covers {frac:.0%} of the image (limit masks.max_cover={params.max_cover:g})"})
        rest = content & ~mask
        if rest.any():
            bright = dark_field(rgb, content, params)
            sig = _signal(rgb, content, params, bright)
            d = float(sig[inside].mean() - sig[rest].mean())
            if d < INVERSION_MARGIN:
                what = "darker" if bright else "paler in haematoxylin"
                flags.append({"flag": "inverted", "reason": f"masked pixels are {what} than the rest (contrast {d:+.3f}); the mask marks background"})
    if bands is not None and touches_padding(mask, bands):
        flags.append({"flag": "touches_padding", "reason": f"mask reaches the padding band ({bands.describe()})"})
    return flags
