"""Unsupervised nucleus masks: the parameters, the entry point, and the SynCGAN-paper method.

`nucleus_mask(rgb, params)` runs `params.method`: "stain" (default, `stain.py`: colour
deconvolution, then these steps on the haematoxylin channel) or "syncgan", the method of
SynCGAN §3.2 (after Kowal et al. 2011) on RGB, kept to reproduce the paper:

    RGB ─ histogram stretch ─ grayscale ─ adaptive (local) threshold ─┐
                                                                      ├─ GMM on Lab colour of the
                                                                      │  candidate pixels; keep the
                                                                      │  nucleus component(s)
                                                                      └─ opening, small objects, holes

The local threshold finds everything with high local contrast (nuclei, but also red cells and
dense cytoplasm); the Gaussian mixture then separates those by colour. Every size (threshold
block, opening radius, object and hole areas) is a fraction of the image side or area, so the
same defaults serve a 64 px simulator tile and a 512 px micrograph with a similar field of view.
"""

from __future__ import annotations

import inspect

import numpy as np
from skimage import color, exposure, filters, morphology
from sklearn.mixture import GaussianMixture

from .darkfield import dark_field_evidence, looks_dark_field
from .params import MaskParams

# ----------------------------------------------------------------------------- steps


def as_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 HxW / HxWx1 / HxWx3 / HxWx4 → uint8 HxWx3 (gray replicated, alpha dropped)."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise ValueError(
            f"nucleus_mask expects uint8 pixels, got {a.dtype}; "
            "convert with cytoray.data.images.read_rgb"
        )
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"nucleus_mask expects HxW or HxWx3 pixels, got shape {a.shape}")
    if min(a.shape[:2]) < 8:
        raise ValueError(f"nucleus_mask needs at least 8x8 px, got {a.shape[1]}x{a.shape[0]}")
    return a[..., :3]


def stretch(rgb: np.ndarray, low_pct: float, high_pct: float) -> np.ndarray:
    """Per-channel histogram stretch to float [0, 1] between two percentiles.

    Per channel (not joint) because stains load channels unequally: a faint haematoxylin
    in the red channel would otherwise keep a compressed range.
    """
    out = np.empty(rgb.shape, dtype=np.float64)
    for c in range(3):
        ch = rgb[..., c].astype(np.float64)
        lo, hi = np.percentile(ch, (low_pct, high_pct))
        if hi <= lo:  # a flat channel carries no contrast; keep it flat rather than divide by zero
            out[..., c] = ch / 255.0
        else:
            out[..., c] = exposure.rescale_intensity(ch, in_range=(lo, hi), out_range=(0.0, 1.0))
    return out


def resolve_polarity(rgb: np.ndarray, params: MaskParams) -> str:
    """'dark' (nuclei darker than background) or 'bright'; auto: bright only for a real dark
    field (darkfield.looks_dark_field: black hueless background, bright objects), not for a merely
    dark picture: a crowded H&E tile is mostly dark too, and its nuclei are the dark part."""
    if params.polarity != "auto":
        return params.polarity
    content = np.ones(rgb.shape[:2], dtype=bool)
    return (
        "bright" if looks_dark_field(dark_field_evidence(rgb, content, params), params) else "dark"
    )


def block_size(shape: tuple[int, int], params: MaskParams) -> int:
    """Odd local-threshold window: block_frac of the shorter side, at least block_min, at most the image."""
    side = min(shape)
    # threshold_local needs odd
    block = max(params.block_min, int(round(params.block_frac * side))) | 1
    return min(block, side if side % 2 else side - 1)


def nucleus_signal(lab: np.ndarray, polarity: str, blue_weight: float) -> np.ndarray:
    """Scalar 'how nucleus-like' per pixel (or per GMM mean): higher = more nucleus.

    Bright polarity (fluorescence): brightness L*. Dark polarity (brightfield): darkness
    100 - L* plus blueness -b*, weighted, because haematoxylin is blue-purple while red cells
    and eosin cytoplasm, which can be nearly as dark, sit at b* >= 0.
    """
    if polarity == "bright":
        return lab[..., 0]
    return (100.0 - lab[..., 0]) - blue_weight * lab[..., 2]


def _size_kwarg(func, area: int) -> dict:
    """skimage >= 0.26 takes max_size (removes <= size), older versions min_size (removes < size)."""
    if "max_size" in inspect.signature(func).parameters:
        return {"max_size": max(area - 1, 0)}
    return (
        {"min_size": area} if func is morphology.remove_small_objects else {"area_threshold": area}
    )


def remove_small(mask: np.ndarray, frac: float) -> np.ndarray:
    """Drop objects below `frac` of the image area."""
    area = int(round(frac * mask.size))
    if area <= 1:
        return mask
    return morphology.remove_small_objects(
        mask, **_size_kwarg(morphology.remove_small_objects, area)
    )


def cleanup(mask: np.ndarray, params: MaskParams) -> np.ndarray:
    """Opening, then drop specks and fill pale holes; all sizes scale with the image."""
    h, w = mask.shape
    radius = int(round(params.open_frac * min(h, w)))
    if radius >= 1:
        mask = morphology.opening(mask, morphology.disk(radius))
    mask = remove_small(mask, params.min_object_frac)
    hole_area = int(round(params.max_hole_frac * h * w))
    if hole_area > 1:
        mask = morphology.remove_small_holes(
            mask, **_size_kwarg(morphology.remove_small_holes, hole_area)
        )
    return mask.astype(bool)


# ----------------------------------------------------------------------------- GMM


def gmm_nucleus_pixels(
    features: np.ndarray, score_of, background_score: float, params: MaskParams, components: int
) -> np.ndarray:
    """Fit a GMM to pixel features [N, F]; return bool [N] = pixel in a nucleus component.

    Rule: score each component by the nucleus score of its mean (`score_of`, see
    `nucleus_signal`). The top component is nuclei; another component joins it when its score
    is nearer the top one than `background_score` (the median score of the pixels that failed
    the local threshold). A nucleus's pale rim or a dim nucleus often gets a component of its
    own, which this keeps, while red cells and cytoplasm score close to the background.
    """
    n = features.shape[0]
    k = min(components, n)
    if k < 2:
        return np.ones(n, dtype=bool)
    rng = np.random.default_rng(params.seed)
    fit_on = (
        features
        if n <= params.gmm_max_samples
        else features[rng.choice(n, params.gmm_max_samples, replace=False)]
    )
    # Lab units differ by feature; standardise so the mixture is not dominated by L*.
    mu, sd = fit_on.mean(0), fit_on.std(0) + 1e-6
    gmm = GaussianMixture(
        n_components=k, covariance_type="full", random_state=params.seed, reg_covar=1e-4
    )
    gmm.fit((fit_on - mu) / sd)
    labels = gmm.predict((features - mu) / sd)
    score = score_of(gmm.means_ * sd + mu)  # back to Lab units, then to a nucleus score
    top = float(score.max())
    keep = np.flatnonzero(np.abs(score - top) < np.abs(score - background_score))
    keep = np.union1d(keep, [int(score.argmax())])
    return np.isin(labels, keep)


def _gmm_mask(
    stretched: np.ndarray, candidate: np.ndarray, polarity: str, params: MaskParams
) -> np.ndarray:
    """Keep the candidate pixels that a Gaussian mixture puts in a nucleus component.

    Brightfield (dark polarity): the confusers are red cells and dense cytoplasm, which pass
    the local threshold as well; they differ from nuclei in colour, so the mixture is fit to
    the Lab colour of the candidate pixels with `gmm_components` classes.
    Fluorescence (bright polarity): one stain, no red cells or cytoplasm; the confuser is
    background noise beside nuclei. The candidates are then nearly all nucleus, and a mixture
    fit to them only splits bright from dim nuclei, so instead it is fit to the brightness of
    every pixel with `gmm_components_bright` classes (background vs nuclei).
    """
    lab = color.rgb2lab(stretched)
    score_of = lambda m: nucleus_signal(m, polarity, params.blue_weight)  # noqa: E731 - Lab rows → score
    background = float(np.median(score_of(lab[~candidate]))) if (~candidate).any() else 0.0
    if polarity == "bright":
        feats = lab[..., :1].reshape(-1, 1)  # L* only: colour in a fluorescence channel is noise
        comp = gmm_nucleus_pixels(
            feats, lambda m: m[:, 0], background, params, params.gmm_components_bright
        )
        return comp.reshape(candidate.shape) & candidate
    mask = np.zeros(candidate.shape, dtype=bool)
    mask[candidate] = gmm_nucleus_pixels(
        lab[candidate], score_of, background, params, params.gmm_components
    )
    return mask


# ----------------------------------------------------------------------------- pipeline


def syncgan_mask(rgb: np.ndarray, params: MaskParams) -> np.ndarray:
    """The SynCGAN §3.2 pipeline on validated uint8 RGB."""
    # 1. contrast: histogram stretching between percentiles
    stretched = stretch(rgb, params.stretch_low_pct, params.stretch_high_pct)
    # 2. grayscale, oriented so nuclei are bright whatever the stain
    gray = color.rgb2gray(stretched)
    polarity = resolve_polarity(rgb, params)
    signal = gray if polarity == "bright" else 1.0 - gray
    # 3. adaptive threshold: pixels clearly above their neighbourhood are candidates
    local = filters.threshold_local(
        signal, block_size(gray.shape, params), offset=-params.threshold_offset
    )
    candidate = signal > local
    if candidate.sum() < 2 * params.gmm_components:
        return np.zeros(gray.shape, dtype=bool)  # nothing stands out: an empty field, not an error
    # 4. GMM separates nuclei from the other things that passed step 3 (see _gmm_mask)
    mask = _gmm_mask(stretched, candidate, polarity, params)
    # 5. morphological clean-up
    return cleanup(mask, params)
