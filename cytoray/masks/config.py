"""What a study sets about nucleus masks, and the masks a generator trains on.

    masks:
      source: unsupervised      # or ground_truth (<class>/masks/ files)
      method: stain             # or syncgan (the paper's RGB method, for reproduction), or segmenter
      segmenter: null           # method=segmenter: a nucleus segmenter (bundle folder or NAME@ALIAS)

`dataset_masks(ds, cfg)` is the one place a generator gets its masks from: ground truth when
asked for (and present), otherwise computed per image with the configured method (or predicted
by a trained segmenter, segmenter.py), padding bands excluded, and every image's quality flags
checked (`on_flag`). `cache_identity(cfg)` is what a mask cache key must hold.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Literal

import numpy as np

from ..errors import ConfigError, DataError
from .labels import WHITES
from .nucleus import nucleus_mask_report
from .params import METHODS, MaskParams

SOURCES = ("unsupervised", "ground_truth")
# the method that predicts masks with a trained nucleus segmenter (segmenter.py)
SEGMENTER = "segmenter"
ON_FLAG = ("warn", "error")
LABELS = ("cell", "nucleus")


@dataclasses.dataclass
class MasksConfig:
    # paper: unsupervised masks (§3.2); ground_truth for ablations
    source: Literal["unsupervised", "ground_truth"] = "unsupervised"
    # stain: beats Otsu-on-H and the segmenter on real
    # H&E (benchmarks/real_data.py); syncgan: the paper's
    method: Literal["stain", "syncgan", "segmenter"] = "stain"
    # method=segmenter: segmenter bundle folder or NAME@ALIAS
    # / NAME/VERSION (what `cytoray segment` loads)
    segmenter: str | None = None
    # auto: brightfield unless the field is black (fluorescence)
    polarity: Literal["auto", "dark", "bright"] = "auto"
    # flat bands at the edges never hold nuclei; a mask along them teaches the GANs frames
    exclude_padding: bool = True
    # flag a mask over this share of the image (a large nucleus close-up reaches ~0.45)
    max_cover: float = 0.6
    # flagged masks (empty/inverted/covers/padding): list them, or refuse to train
    on_flag: Literal["warn", "error"] = "warn"
    # cell: glass/cytoplasm/nucleus maps (masks/labels.py); nucleus: the paper's binary mask
    labels: Literal["cell", "nucleus"] = "cell"
    # label maps: the glass's white level, 255 (absolute), or estimated over the images mapped
    # together (set: Herlev's ~185-grey glass is then glass, and normal cells get their outline;
    # on Herlev, 4 seeds: normal KID 0.080 -> 0.072 but abnormal 0.057 -> 0.076, so not the default)
    white: Literal["set", "absolute"] = "absolute"

    @property
    def uses_segmenter(self) -> bool:
        """Masks predicted by the trained segmenter that `segmenter` names."""
        return self.source == "unsupervised" and self.method == SEGMENTER

    def validate(self) -> None:
        """Reject bad values before any job starts; errors name the key."""
        if self.source not in SOURCES:
            raise ConfigError(f"masks.source={self.source!r}: use one of {', '.join(SOURCES)}")
        if self.method not in (*METHODS, SEGMENTER):
            raise ConfigError(
                f"masks.method={self.method!r}: use one of {', '.join((*METHODS, SEGMENTER))}"
            )
        if self.method == SEGMENTER:
            if not self.segmenter:
                raise ConfigError(
                    "masks.segmenter is not set: masks.method=segmenter "
                    "needs a segmenter bundle folder or NAME@ALIAS (e.g. "
                    "nucleus-segmenter@champion from studies/refined_segmentation.py)"
                )
            from .segmenter import check_ref

            # a folder here, or a registered name: settled before any job (study_segmenter)
            check_ref(self.segmenter)
        if self.segmenter and self.method != SEGMENTER:
            raise ConfigError(
                f"masks.segmenter={self.segmenter!r} is set but masks.method={self.method!r}; "
                "set masks.method=segmenter or drop masks.segmenter"
            )
        if self.polarity not in ("auto", "dark", "bright"):
            raise ConfigError(
                f"masks.polarity={self.polarity!r}: use auto, "
                "dark (brightfield) or bright (fluorescence)"
            )
        if not isinstance(self.exclude_padding, bool):
            raise ConfigError(f"masks.exclude_padding={self.exclude_padding!r}: use true or false")
        if not 0 < self.max_cover <= 1:
            raise ConfigError(
                f"masks.max_cover={self.max_cover}: give a share of the image in (0, 1]"
            )
        if self.labels not in LABELS:
            raise ConfigError(
                f"masks.labels={self.labels!r}: use cell (glass/cytoplasm/nucleus "
                "label maps) or nucleus (the paper's binary masks)"
            )
        if self.white not in WHITES:
            raise ConfigError(
                f"masks.white={self.white!r}: use set (the glass's white level estimated over the "
                "images) or absolute (255)"
            )
        if self.on_flag not in ON_FLAG:
            raise ConfigError(
                f"masks.on_flag={self.on_flag!r}: use warn (list "
                "flagged images) or error (refuse to train)"
            )

    def params(self) -> MaskParams:
        """The per-image parameters these settings stand for (defaults for everything else)."""
        return MaskParams(
            method=self.method,
            polarity=self.polarity,
            exclude_padding=self.exclude_padding,
            max_cover=self.max_cover,
        )


def cache_identity(cfg: MasksConfig) -> dict:
    """Every mask setting, a segmenter named by its content hash instead of its name (an alias
    moves, a folder is retrained; a copy is the same segmenter): two segmenters never share masks."""
    from ..config import to_plain

    out = to_plain(cfg)
    if cfg.uses_segmenter:
        from .segmenter import load_mask_segmenter

        out["segmenter"] = "sha256:" + load_mask_segmenter(cfg.segmenter)[1]
    return {"masks": out}


def dataset_masks(ds, cfg: MasksConfig, progress: bool = False) -> np.ndarray:
    """bool [N, S, S] nucleus masks of an ImageSet for generator training.

    ground_truth: the dataset's own masks (DataError when it has none). unsupervised: one mask
    per image with cfg.method, padding excluded; images whose mask is flagged are listed on
    stderr (on_flag=warn) or refused with a DataError naming them (on_flag=error).
    """
    cfg.validate()
    if cfg.source == "ground_truth":
        if ds.masks is None:
            raise DataError(
                f"{ds.source or 'dataset'}: masks.source=ground_truth but not "
                "every image has a ground-truth mask (<class>/masks/<name>.png); "
                "add them or set masks.source=unsupervised"
            )
        return np.asarray(ds.masks, dtype=bool)
    if cfg.method == SEGMENTER:
        from .segmenter import segmenter_reports

        reports = segmenter_reports(ds.images, cfg)
    else:
        params = cfg.params()
        reports = (nucleus_mask_report(img, params) for img in ds.images)
    out = np.zeros(ds.images.shape[:3], dtype=bool)
    flagged: list[str] = []
    for i, (mask, info) in enumerate(reports):
        out[i] = mask
        if info["flags"]:
            flagged.append(
                f"{ds.names[i]} "
                f"({'; '.join(f['flag'] + ': ' + f['reason'] for f in info['flags'])})"
            )
        if progress and (i + 1) % 50 == 0:
            print(f"[masks] {i + 1}/{len(ds)} {cfg.method} masks", file=sys.stderr, flush=True)
    if flagged:
        msg = f"{len(flagged)}/{len(ds)} {cfg.method} masks flagged, e.g. {flagged[0]}"
        if cfg.on_flag == "error":
            raise DataError(
                f"{ds.source or 'dataset'}: {msg}; check them with `cytoray "
                "masks --data ... --eval` or set masks.on_flag=warn"
            )
        print(f"[masks] warning: {msg}", file=sys.stderr, flush=True)
    return out


def dataset_label_maps(ds, cfg: MasksConfig, nuclei: np.ndarray | None = None) -> np.ndarray:
    """uint8 [N, S, S] label maps (masks/labels.py) around the nucleus masks of `dataset_masks`;
    images with no cytoplasm found are listed on stderr (flags are warnings: a close-up is legal)."""
    from .labels import label_maps

    nuclei = dataset_masks(ds, cfg) if nuclei is None else nuclei
    maps, flags = label_maps(ds.images, nuclei, white=cfg.white)
    bare = [ds.names[i] for i, f in enumerate(flags) if any(x["flag"] == "no_cytoplasm" for x in f)]
    if bare:
        print(
            f"[masks] {len(bare)}/{len(ds)} label maps found no cytoplasm, e.g. {bare[0]}",
            file=sys.stderr,
            flush=True,
        )
    return maps
