"""The names cytoray records metrics under, in one place: what writes a figure and what reads it
back (reports, tables, the Tune objective) spell it through here.

Image fidelity, per class and pooled (`all`), states its protocol in the name:
`<statistic>_<split>_<features>[_<part>]/<class>`, e.g.

    fid("val")                        "fid_val_inception/all"
    kid("test", "benign")             "kid_test_inception_mean/benign"
    fid("val", part="n_real")         "fid_val_inception_n_real/all"   (its sample size)
    fid("val", features=MASK)         "fid_val_mask_inception/all"     (masks drawn as images)
    realism("precision", "val")       "precision_val_inception/all"

A trial's report keys (the study logger logs each number as a metric of the trial's run):
`FINAL` marks its last report, `TRIAL_SECONDS` its wall time, `GENERATOR_CACHED` whether its
generator came from the cache, `SPLITS_SCORED` how many splits a mean covers.
"""

from __future__ import annotations

ALL = "all"  # the pooled figure's class name (no class may be called so)
INCEPTION = "inception"  # InceptionV3 pool features of the images
MASK = "mask_inception"  # the same features of the masks (label maps) drawn as images


def _name(stat: str, split: str, cls: str, features: str, part: str) -> str:
    return f"{stat}_{split}_{features}{'_' + part if part else ''}/{cls}"


def fid(split: str, cls: str = ALL, part: str = "", features: str = INCEPTION) -> str:
    """FID (part ""), its sample sizes ("n_real", "n_fake") or its real-vs-real floor
    ("floor", "floor_sd", "floor_at_n")."""
    return _name("fid", split, cls, features, part)


def kid(split: str, cls: str = ALL, part: str = "mean", features: str = INCEPTION) -> str:
    """KID's mean, "std", "subset_size", or its floor ("floor_mean", "floor_sd")."""
    return _name("kid", split, cls, features, part)


def realism(stat: str, split: str, cls: str = ALL, part: str = "") -> str:
    """A realism / diversity / copying figure (metrics/realism.py): precision, recall, density,
    coverage, prdc ("k"), memorised_share, memorised_threshold, memorised_percentile, or a
    "floor" part."""
    return _name(stat, split, cls, INCEPTION, part)


# the selection metric of the classifier studies, and the stage's best-epoch criterion
VAL_BACC = "val_balanced_accuracy"
VAL_ACCURACY, VAL_LOSS = "val_accuracy", "val_loss"
VAL_DICE = "val_dice"  # the segmentation study's selection metric (pooled over pixels)
FID_VAL, MASK_FID_VAL = fid("val"), fid("val", features=MASK)
FID_TEST, KID_TEST = fid("test"), kid("test")
FINAL = "final"
TRIAL_SECONDS = "trial_seconds"
GENERATOR_CACHED = "generator_cached"
SPLITS_SCORED = "splits_scored"
