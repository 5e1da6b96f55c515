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

import dataclasses
import inspect
from typing import Literal

import numpy as np
from skimage import color, exposure, filters, morphology
from sklearn.mixture import GaussianMixture

from ..errors import ConfigError

METHODS = ("stain", "syncgan")

# ----------------------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True)
class MaskParams:
    """Every knob of `nucleus_mask`, each with the reason for its default."""

    method: Literal["stain", "syncgan"] = "stain"  # stain: measured better on real H&E/Pap; syncgan: the paper, for reproduction
    stretch_low_pct: float = 1.0  # percentile mapped to 0: ignores dust/dead pixels, unlike min/max
    stretch_high_pct: float = 99.5  # percentile mapped to 1: keeps a few saturated mitoses from compressing the rest
    polarity: Literal["dark", "bright", "auto"] = "auto"  # dark = brightfield stain, bright = fluorescence; auto: from the background
    auto_dark_background: float = 0.35  # auto: a dark field (fluorescence) has median gray below this (0..1), among other evidence (stain.looks_dark_field)
    block_frac: float = 0.25  # syncgan: local-threshold window as a fraction of the shorter side, several nuclei wide (stain: local_nuclei)
    block_min: int = 11  # smallest window (px): a window narrower than a nucleus marks only its rim
    threshold_offset: float = 0.02  # candidate must beat its local mean by this much (0..1): flat background stays out
    open_frac: float = 1 / 256  # opening radius / shorter side (2 px at 512): cuts speckle; larger erases spindle nuclei
    min_object_frac: float = 0.0002  # objects below this fraction of the area are noise (a lymphocyte is ~0.0003 of a 1360x1024 tile)
    exclude_padding: bool = True  # flat bands at the edges (padding, scanner margins) never hold nuclei
    max_cover: float = 0.6  # quality flag: a mask over this fraction of the content is suspect (a large nucleus close-up reaches ~0.45)
    seed: int = 0  # seeds the GMM (k-means init, sub-sampling): same image, same mask
    # -- syncgan method only
    gmm_components: int = 4  # brightfield classes among candidates: dense chromatin / pale nucleus / cytoplasm / red cells
    gmm_components_bright: int = 2  # fluorescence classes over all pixels: nuclei / background
    gmm_max_samples: int = 20000  # pixels used to fit the mixture: fit cost stays flat on large images
    blue_weight: float = 0.5  # dark polarity: nucleus score = darkness - w * b* (haematoxylin is blue, eosin/RBC red-yellow)
    max_hole_frac: float = 0.002  # holes below this fraction of the area are pale chromatin, filled
    # -- stain method only
    dark_floor: float = 0.1  # auto: a dark field also has its darkest tenth below this gray (a black background; used by both methods)
    stains: Literal["auto", "h-e", "h-dab"] = "auto"  # deconvolution basis; auto: h-dab when DAB (brown, IHC) is there
    dab_share: float = 0.2  # auto: DAB-hued share of stained pixels that makes an image IHC (ihc.png 0.76, H&E/Pap <= 0.05)
    illumination_pct: float = 99.0  # content percentile taken as white: optical density relative to the real illumination
    smooth_frac: float = 1 / 256  # Gaussian sigma of the H channel / shorter side: evens out textured chromatin
    local_nuclei: float = 3.0  # local-threshold window in typical nucleus diameters (measured per image)
    glass_od: float = 0.15  # total optical density below this is bare glass, left out of the global threshold
    refine_gap: float = 1.0  # split an object whose core beats its rim by this x (rim - background): nucleus + cytoplasm
    refine_separation: float = 4.0  # ...or by this many rim standard deviations (a unimodal textured nucleus splits at ~2.7)
    core_unity: float = 0.8  # ...and only when its core is one body (largest part >= this share): not chromatin clumps
    keep_level: float = 0.5  # keep objects at least this far (0..1) from background to the densest nuclei: drops folds
    fill_ratio: float = 1.0  # fill holes smaller than this x their object: textured chromatin, not lumens
    agree_dice: float = 0.5  # stain mask vs Otsu on haematoxylin: under this Dice they disagree and stain.decide's rule picks

    def validate(self) -> None:
        """Reject values that make the pipeline meaningless; errors name the key."""
        if not 0 <= self.stretch_low_pct < self.stretch_high_pct <= 100:
            raise ConfigError(
                f"masks.stretch_low_pct/stretch_high_pct={self.stretch_low_pct}/{self.stretch_high_pct}: "
                "need 0 <= low < high <= 100"
            )
        if self.method not in METHODS:
            raise ConfigError(f"masks.method={self.method!r}: use one of {', '.join(METHODS)}")
        if self.polarity not in ("dark", "bright", "auto"):
            raise ConfigError(f"masks.polarity={self.polarity!r}: use 'dark', 'bright' or 'auto'")
        if not 0 < self.block_frac <= 1 or self.block_min < 3:
            raise ConfigError(f"masks.block_frac={self.block_frac}, block_min={self.block_min}: need 0 < frac <= 1, min >= 3")
        for key in ("gmm_components", "gmm_components_bright"):
            if getattr(self, key) < 2:
                raise ConfigError(f"masks.{key}={getattr(self, key)}: need at least 2 (nuclei vs the rest)")
        if self.gmm_max_samples < 100:
            raise ConfigError(f"masks.gmm_max_samples={self.gmm_max_samples}: need at least 100 pixels to fit a mixture")
        for key in ("open_frac", "min_object_frac", "max_hole_frac", "blue_weight", "smooth_frac", "glass_od",
                    "refine_gap", "refine_separation", "fill_ratio", "local_nuclei"):  # fmt: skip
            if getattr(self, key) < 0:
                raise ConfigError(f"masks.{key}={getattr(self, key)}: must be >= 0")
        for key in ("keep_level", "max_cover", "core_unity", "agree_dice"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"masks.{key}={getattr(self, key)}: must be between 0 and 1")
        if self.stains not in ("auto", "h-e", "h-dab"):
            raise ConfigError(f"masks.stains={self.stains!r}: use auto, h-e (H&E, Pap) or h-dab (immunohistochemistry)")
        if not 0 <= self.dab_share <= 1:
            raise ConfigError(f"masks.dab_share={self.dab_share}: must be between 0 and 1")
        if not 0 <= self.dark_floor <= 1:
            raise ConfigError(f"masks.dark_floor={self.dark_floor}: must be between 0 and 1")
        if not 50 <= self.illumination_pct <= 100:
            raise ConfigError(f"masks.illumination_pct={self.illumination_pct}: use 50..100 (the white level is a bright percentile)")


# ----------------------------------------------------------------------------- steps


def _as_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 HxW / HxWx1 / HxWx3 / HxWx4 → uint8 HxWx3 (gray replicated, alpha dropped)."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise ValueError(f"nucleus_mask expects uint8 pixels, got {a.dtype}; convert with cytoray.data.images.read_rgb")
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
    field (stain.looks_dark_field: black hueless background, bright objects), not for a merely
    dark picture: a crowded H&E tile is mostly dark too, and its nuclei are the dark part."""
    if params.polarity != "auto":
        return params.polarity
    from .stain import dark_field_evidence, looks_dark_field

    content = np.ones(rgb.shape[:2], dtype=bool)
    return "bright" if looks_dark_field(dark_field_evidence(rgb, content, params), params) else "dark"


def block_size(shape: tuple[int, int], params: MaskParams) -> int:
    """Odd local-threshold window: block_frac of the shorter side, at least block_min, at most the image."""
    side = min(shape)
    block = max(params.block_min, int(round(params.block_frac * side))) | 1  # threshold_local needs odd
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
    return {"min_size": area} if func is morphology.remove_small_objects else {"area_threshold": area}


def remove_small(mask: np.ndarray, frac: float) -> np.ndarray:
    """Drop objects below `frac` of the image area."""
    area = int(round(frac * mask.size))
    if area <= 1:
        return mask
    return morphology.remove_small_objects(mask, **_size_kwarg(morphology.remove_small_objects, area))


def cleanup(mask: np.ndarray, params: MaskParams) -> np.ndarray:
    """Opening, then drop specks and fill pale holes; all sizes scale with the image."""
    h, w = mask.shape
    radius = int(round(params.open_frac * min(h, w)))
    if radius >= 1:
        mask = morphology.opening(mask, morphology.disk(radius))
    mask = remove_small(mask, params.min_object_frac)
    hole_area = int(round(params.max_hole_frac * h * w))
    if hole_area > 1:
        mask = morphology.remove_small_holes(mask, **_size_kwarg(morphology.remove_small_holes, hole_area))
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
    fit_on = features if n <= params.gmm_max_samples else features[rng.choice(n, params.gmm_max_samples, replace=False)]
    # Lab units differ by feature; standardise so the mixture is not dominated by L*.
    mu, sd = fit_on.mean(0), fit_on.std(0) + 1e-6
    gmm = GaussianMixture(n_components=k, covariance_type="full", random_state=params.seed, reg_covar=1e-4)
    gmm.fit((fit_on - mu) / sd)
    labels = gmm.predict((features - mu) / sd)
    score = score_of(gmm.means_ * sd + mu)  # back to Lab units, then to a nucleus score
    top = float(score.max())
    keep = np.flatnonzero(np.abs(score - top) < np.abs(score - background_score))
    keep = np.union1d(keep, [int(score.argmax())])
    return np.isin(labels, keep)


def _gmm_mask(stretched: np.ndarray, candidate: np.ndarray, polarity: str, params: MaskParams) -> np.ndarray:
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
        comp = gmm_nucleus_pixels(feats, lambda m: m[:, 0], background, params, params.gmm_components_bright)
        return comp.reshape(candidate.shape) & candidate
    mask = np.zeros(candidate.shape, dtype=bool)
    mask[candidate] = gmm_nucleus_pixels(lab[candidate], score_of, background, params, params.gmm_components)
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
    local = filters.threshold_local(signal, block_size(gray.shape, params), offset=-params.threshold_offset)
    candidate = signal > local
    if candidate.sum() < 2 * params.gmm_components:
        return np.zeros(gray.shape, dtype=bool)  # nothing stands out: an empty field, not an error
    # 4. GMM separates nuclei from the other things that passed step 3 (see _gmm_mask)
    mask = _gmm_mask(stretched, candidate, polarity, params)
    # 5. morphological clean-up
    return cleanup(mask, params)


def nucleus_mask_report(rgb: np.ndarray, params: MaskParams | None = None, method: str | None = None) -> tuple[np.ndarray, dict]:
    """`nucleus_mask` plus what a report needs: the padding bands found, the polarity used,
    and quality flags (empty, inverted, covers too much, touches padding), each with its reason."""
    from ..data.background import detect_bands
    from .quality import quality_flags
    from .stain import stain_mask

    params = params or MaskParams()
    if method is not None:
        params = dataclasses.replace(params, method=method)
    params.validate()
    rgb = _as_rgb(rgb)
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


def nucleus_mask(rgb: np.ndarray, params: MaskParams | None = None, method: str | None = None) -> np.ndarray:
    """Unsupervised nucleus mask of one image: uint8 HxW or HxWx3 in, bool HxW out (True = nucleus).

    `method` ("stain" | "syncgan") overrides `params.method`. Padding bands are never marked
    (unless params.exclude_padding is False).
    """
    return nucleus_mask_report(rgb, params, method)[0]
