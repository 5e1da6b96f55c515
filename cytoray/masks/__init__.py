"""Unsupervised nucleus masks: stain-aware by default (colour deconvolution, then the SynCGAN
§3.2 steps on the haematoxylin channel), the SynCGAN-paper RGB method for reproduction.

`nucleus_mask` segments one image (`nucleus_mask_report` adds padding and quality flags);
`run_masks` a folder dataset (cached, optionally scored against ground truth);
`dataset_masks` gives a generator its training masks from a `MasksConfig`;
`stardist_reference` loads a real micrograph with real masks.
"""

from .config import MasksConfig, dataset_masks
from .nucleus import nucleus_mask, nucleus_mask_report
from .params import METHODS, MaskParams
from .reference import stardist_reference
from .run import format_summary, run_masks

__all__ = [
    "METHODS",
    "MaskParams",
    "MasksConfig",
    "dataset_masks",
    "format_summary",
    "nucleus_mask",
    "nucleus_mask_report",
    "run_masks",
    "stardist_reference",
]
