"""The unsupervised nucleus masks' settings (`masks.*` of a config): every knob of `nucleus_mask`,
each with the reason for its default, and the check that rejects meaningless values."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..errors import ConfigError

METHODS = ("stain", "syncgan")


@dataclasses.dataclass(frozen=True)
class MaskParams:
    """Every knob of `nucleus_mask`, each with the reason for its default."""

    # stain: measured better on real H&E/Pap; syncgan: the paper, for reproduction
    method: Literal["stain", "syncgan"] = "stain"
    stretch_low_pct: float = 1.0  # percentile mapped to 0: ignores dust/dead pixels, unlike min/max
    # percentile mapped to 1: keeps a few saturated mitoses from compressing the rest
    stretch_high_pct: float = 99.5
    # dark = brightfield stain, bright = fluorescence; auto: from the background
    polarity: Literal["dark", "bright", "auto"] = "auto"
    # auto: a dark field (fluorescence) has median gray below this
    # (0..1), among other evidence (darkfield.looks_dark_field)
    auto_dark_background: float = 0.35
    # syncgan: local-threshold window as a fraction of the
    # shorter side, several nuclei wide (stain: local_nuclei)
    block_frac: float = 0.25
    block_min: int = 11  # smallest window (px): a window narrower than a nucleus marks only its rim
    # candidate must beat its local mean by this much (0..1): flat background stays out
    threshold_offset: float = 0.02
    # opening radius / shorter side (2 px at 512): cuts speckle; larger erases spindle nuclei
    open_frac: float = 1 / 256
    # objects below this fraction of the area are noise
    # (a lymphocyte is ~0.0003 of a 1360x1024 tile)
    min_object_frac: float = 0.0002
    # flat bands at the edges (padding, scanner margins) never hold nuclei
    exclude_padding: bool = True
    # quality flag: a mask over this fraction of the content
    # is suspect (a large nucleus close-up reaches ~0.45)
    max_cover: float = 0.6
    seed: int = 0  # seeds the GMM (k-means init, sub-sampling): same image, same mask
    # -- syncgan method only
    # brightfield classes among candidates: dense chromatin / pale nucleus / cytoplasm / red cells
    gmm_components: int = 4
    gmm_components_bright: int = 2  # fluorescence classes over all pixels: nuclei / background
    # pixels used to fit the mixture: fit cost stays flat on large images
    gmm_max_samples: int = 20000
    # dark polarity: nucleus score = darkness - w * b* (haematoxylin is blue, eosin/RBC red-yellow)
    blue_weight: float = 0.5
    max_hole_frac: float = 0.002  # holes below this fraction of the area are pale chromatin, filled
    # -- stain method only
    # auto: a dark field also has its darkest tenth below this gray (a black background; used by
    # both methods)
    dark_floor: float = 0.1
    # deconvolution basis; auto: h-dab when DAB (brown, IHC) is there
    stains: Literal["auto", "h-e", "h-dab"] = "auto"
    # auto: DAB-hued share of stained pixels that makes an image IHC (ihc.png 0.76, H&E/Pap <= 0.05)
    dab_share: float = 0.2
    # content percentile taken as white: optical density relative to the real illumination
    illumination_pct: float = 99.0
    # Gaussian sigma of the H channel / shorter side: evens out textured chromatin
    smooth_frac: float = 1 / 256
    # local-threshold window in typical nucleus diameters (measured per image)
    local_nuclei: float = 3.0
    # total optical density below this is bare glass, left out of the global threshold
    glass_od: float = 0.15
    # split an object whose core beats its rim by this x (rim - background): nucleus + cytoplasm
    refine_gap: float = 1.0
    # ...or by this many rim standard deviations (a unimodal textured nucleus splits at ~2.7)
    refine_separation: float = 4.0
    # ...and only when its core is one body (largest part >= this share): not chromatin clumps
    core_unity: float = 0.8
    # keep objects at least this far (0..1) from background to the densest nuclei: drops folds
    keep_level: float = 0.5
    # fill holes smaller than this x their object: textured chromatin, not lumens
    fill_ratio: float = 1.0
    # stain mask vs Otsu on haematoxylin: under this
    # Dice they disagree and stain.decide's rule picks
    agree_dice: float = 0.5

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
            raise ConfigError(
                f"masks.block_frac={self.block_frac}, "
                f"block_min={self.block_min}: need 0 < frac <= 1, min >= 3"
            )
        for key in ("gmm_components", "gmm_components_bright"):
            if getattr(self, key) < 2:
                raise ConfigError(
                    f"masks.{key}={getattr(self, key)}: need at least 2 (nuclei vs the rest)"
                )
        if self.gmm_max_samples < 100:
            raise ConfigError(
                f"masks.gmm_max_samples={self.gmm_max_samples}: "
                "need at least 100 pixels to fit a mixture"
            )
        for key in (
            "open_frac",
            "min_object_frac",
            "max_hole_frac",
            "blue_weight",
            "smooth_frac",
            "glass_od",
            "refine_gap",
            "refine_separation",
            "fill_ratio",
            "local_nuclei",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(f"masks.{key}={getattr(self, key)}: must be >= 0")
        for key in ("keep_level", "max_cover", "core_unity", "agree_dice"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"masks.{key}={getattr(self, key)}: must be between 0 and 1")
        if self.stains not in ("auto", "h-e", "h-dab"):
            raise ConfigError(
                f"masks.stains={self.stains!r}: use auto, h-e "
                "(H&E, Pap) or h-dab (immunohistochemistry)"
            )
        if not 0 <= self.dab_share <= 1:
            raise ConfigError(f"masks.dab_share={self.dab_share}: must be between 0 and 1")
        if not 0 <= self.dark_floor <= 1:
            raise ConfigError(f"masks.dark_floor={self.dark_floor}: must be between 0 and 1")
        if not 50 <= self.illumination_pct <= 100:
            raise ConfigError(
                f"masks.illumination_pct={self.illumination_pct}: use "
                "50..100 (the white level is a bright percentile)"
            )
