"""Overlap metrics for binary segmentation masks (nucleus masks against ground truth).

Both metrics treat any nonzero value as foreground. Two empty masks agree perfectly (1.0):
an image without nuclei predicted as empty is a correct prediction, not an undefined one.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------- helpers


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred) != 0, np.asarray(truth) != 0
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: prediction {p.shape} vs truth {t.shape}")
    return p, t


# ----------------------------------------------------------------------------- metrics


def dice(pred, truth) -> float:
    """Dice (F1 of pixels): 2|P∩T| / (|P| + |T|); both empty → 1.0."""
    p, t = _pair(pred, truth)
    denom = int(p.sum()) + int(t.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / denom


def iou(pred, truth) -> float:
    """Intersection over union (Jaccard): |P∩T| / |P∪T|; both empty → 1.0."""
    p, t = _pair(pred, truth)
    union = int(np.logical_or(p, t).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(p, t).sum()) / union
