"""Unsupervised nucleus masks (SynCGAN §3.2): histogram stretch → gray → local threshold → GMM.

`nucleus_mask` segments one image; `run_masks` a folder dataset (cached, optionally scored
against ground truth); `stardist_reference` loads a real micrograph with real masks.
"""

from .reference import stardist_reference
from .run import run_masks
from .unsupervised import MaskParams, nucleus_mask

__all__ = ["MaskParams", "nucleus_mask", "run_masks", "stardist_reference"]
