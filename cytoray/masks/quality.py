"""Per-image quality flags for a nucleus mask, each with the reason, so a failed mask is named
in the report instead of silently priming a generator.

    empty            no nucleus pixel in the content
    inverted         the mask is paler in haematoxylin (or, in a dark field, darker) than the rest:
                     it marks background, not nuclei. Whether the image is a dark field is decided
                     here from the image alone (darkfield.looks_dark_field), never from the polarity the
                     mask was made with: a brightfield tile taken for fluorescence is caught.
    covers           the mask covers more than `max_cover` of the content
    touches_padding  a mask pixel lies on, or next to, a flat padding band

The checks use only the image and the mask (no ground truth), so they run on every user folder.
"""

from __future__ import annotations

import numpy as np
from skimage import color

# An inverted mask is one whose nuclei are not denser than what it leaves out. The margin is in
# standard deviations of the signal over the content (so it means the same in rgb2hed units and
# in 0..1 gray): a tenth keeps a real but faint contrast (pale nuclei on pale cytoplasm) from
# being called inverted, while a mask of random pixels (contrast ~0) is still caught.
INVERSION_MARGIN = 0.1

FLAGS = ("empty", "inverted", "covers", "touches_padding")


def _signal(rgb: np.ndarray, bright: bool) -> np.ndarray:
    """A method-independent nucleus signal: haematoxylin density by skimage's own colour
    deconvolution (`rgb2hed`, Ruifrok & Johnston; nothing of the mask method's, so a mistake of
    the method is not repeated here), or brightness in a dark field."""
    if bright:
        return color.rgb2gray(rgb)
    return color.rgb2hed(rgb)[..., 0]


def contrast(sig: np.ndarray, mask: np.ndarray, content: np.ndarray) -> float:
    """Mean signal inside the mask minus outside it (within the content), in standard deviations
    of the signal over the content; 0.0 when either side is empty."""
    inside, rest = mask & content, content & ~mask
    if not inside.any() or not rest.any():
        return 0.0
    spread = float(sig[content].std()) or 1.0
    return float(sig[inside].mean() - sig[rest].mean()) / spread


def haematoxylin_contrast(rgb: np.ndarray, mask: np.ndarray, content: np.ndarray) -> float:
    """`contrast` of rgb2hed's haematoxylin: how much denser in haematoxylin a mask is than the
    rest (brightfield; < INVERSION_MARGIN: inverted)."""
    return contrast(_signal(rgb, False), mask, content)


def quality_flags(
    rgb: np.ndarray, mask: np.ndarray, content: np.ndarray, bands, params
) -> list[dict]:
    """[{'flag': name, 'reason': text}] for one image's mask (empty list = nothing suspect)."""
    from ..data.background import touches_padding
    from .darkfield import dark_field_evidence, looks_dark_field

    flags: list[dict] = []
    n_content = int(content.sum())
    inside = mask & content
    if bands is not None and bands.flat:
        return [
            {"flag": "empty", "reason": "the image is one flat colour; there is nothing to segment"}
        ]
    if not inside.any():
        flags.append(
            {
                "flag": "empty",
                "reason": "no nucleus found; check the stain (haematoxylin) or the method",
            }
        )
    else:
        frac = inside.sum() / max(n_content, 1)
        if frac > params.max_cover:
            flags.append(
                {
                    "flag": "covers",
                    "reason": f"mask covers {frac:.0%} of the image (limit masks.max_cover={params.max_cover:g})",
                }
            )
        rest = content & ~mask
        if rest.any():
            bright = looks_dark_field(dark_field_evidence(rgb, content, params), params)
            sig = _signal(rgb, bright)
            d = contrast(sig, mask, content)
            if d < INVERSION_MARGIN:
                what = "darker" if bright else "paler in haematoxylin"
                flags.append(
                    {
                        "flag": "inverted",
                        "reason": f"masked pixels are {what} than the rest (contrast {d:+.2f} sd); the mask marks background",
                    }
                )
    if bands is not None and touches_padding(mask, bands):
        flags.append(
            {
                "flag": "touches_padding",
                "reason": f"mask reaches the padding band ({bands.describe()})",
            }
        )
    return flags
