"""What the simulator's scenes share (simulate.py: smears; acquisition.py: single cells; tissue.py:
histology): the feature tables that a grade maps to, the stain palettes, and the drawing helpers.
"""

from __future__ import annotations

import numpy as np

from .nuclei import random_polygon, smooth_polygon, stretch

FEATURE_JITTER = 0.08  # std of each feature's own grade offset: features are not in lockstep

# Each feature: (value at grade 0, value at grade 1). Radii are fractions of the image width.
CYTOLOGY = {
    "nucleus_radius": (0.032, 0.056),
    "anisonucleosis": (0.06, 0.30),  # log-normal sigma of nucleus radius within an image
    "irregularity": (0.15, 0.65),
    "spikiness": (0.04, 0.22),
    "nc_ratio": (0.38, 0.75),  # nucleus radius / cell radius
    "chromatin": (0.15, 0.95),
    "hyperchromasia": (0.95, 1.7),
    "nucleolus": (0.0, 1.2),
    "cohesion": (0.95, 0.35),  # fraction of cells in groups
    "spacing": (1.0, 0.62),  # centre distance / cell diameter inside a group (< 1 overlaps)
    "disorder": (0.08, 0.45),  # jitter of cell positions / spacing
    "cells": (14.0, 34.0),  # mean epithelial cells per field
    "bare_nuclei": (6.0, 0.0),  # benign bare bipolar (myoepithelial) nuclei
    "debris": (3.0, 10.0),
}
HISTOLOGY = {
    "nucleus_radius": (0.022, 0.036),
    "anisonucleosis": (0.06, 0.30),
    "irregularity": (0.10, 0.60),
    "spikiness": (0.03, 0.20),
    "chromatin": (0.15, 0.90),
    "hyperchromasia": (0.95, 1.45),
    "nucleolus": (0.0, 1.2),
    "glands": (1.4, 4.0),  # mean count of ducts / tumour nests
    "gland_radius": (0.26, 0.12),
    "gland_irregularity": (0.10, 0.65),
    "gland_spikiness": (0.04, 0.28),
    "layers": (-0.8, 5.5),  # epithelial layers, rounded, >= 1 (many = solid nest, no lumen)
    "spacing": (1.25, 0.85),  # centre distance / nucleus diameter along a layer
    "disorder": (0.05, 0.55),  # position jitter and loss of polarity
    "myoepithelium": (1.0, 0.0),  # probability that a gland keeps its myoepithelial layer
    "stromal_nuclei": (10.0, 6.0),
    "infiltrating": (0.0, 12.0),  # single tumour cells in stroma
    "lymphocytes": (2.0, 6.0),
}
# Stain palettes: RGB transmittance at unit density. Pap and Giemsa-like are mixed per image
# independently of class, so colour carries no label information.
PAP = {
    "nucleus": (0.42, 0.36, 0.68),
    "cyan": (0.62, 0.86, 0.88),
    "pink": (0.93, 0.66, 0.80),
    "rbc": (0.95, 0.50, 0.52),
    "bg_pink": (0.90, 0.78, 0.86),
    "bg_grey": (0.80, 0.85, 0.92),
}
GIEMSA = {
    "nucleus": (0.55, 0.30, 0.66),
    "cyan": (0.70, 0.76, 0.95),
    "pink": (0.86, 0.68, 0.92),
    "rbc": (0.96, 0.60, 0.60),
    "bg_pink": (0.88, 0.80, 0.92),
    "bg_grey": (0.82, 0.84, 0.95),
}
HE = {"nucleus": (0.40, 0.30, 0.62), "eosin": (0.93, 0.52, 0.72), "epithelium": (0.84, 0.70, 0.90)}


class Features:
    """Per-image feature values: lerp of each (g0, g1) pair at the grade plus own jitter."""

    def __init__(
        self, table: dict[str, tuple[float, float]], grade: float, rng: np.random.Generator
    ):
        self.g = {k: float(np.clip(grade + rng.normal(0, FEATURE_JITTER), 0, 1)) for k in table}
        self.v = {k: lo + (hi - lo) * self.g[k] for k, (lo, hi) in table.items()}

    def __getitem__(self, key: str) -> float:
        return self.v[key]


def palette(rng: np.random.Generator, a: dict, b: dict | None = None) -> dict[str, np.ndarray]:
    """Mix two stain palettes at a random weight and jitter each colour a little (lab-to-lab)."""
    t = rng.uniform() if b is not None else 0.0
    out = {}
    for k, c in a.items():
        mix = np.asarray(c) * (1 - t) + (np.asarray(b[k]) * t if b is not None else 0)
        out[k] = np.clip(mix * np.exp(rng.normal(0, 0.03, 3)), 0.05, 1.0)
    return out


def px(poly: np.ndarray, size: int) -> np.ndarray:
    """Relative (0..1) coordinates -> pixel coordinates with centres at integers."""
    return poly * size - 0.5


def nucleus(
    rng: np.random.Generator,
    c: np.ndarray,
    r: float,
    f: Features,
    ratio: float = 1.0,
    angle: float | None = None,
) -> np.ndarray:
    """A smoothed random-polygon nucleus with the image's irregularity/spikiness (relative units)."""
    poly = smooth_polygon(random_polygon(rng, c, r, f["irregularity"], f["spikiness"], 12))
    return stretch(poly, c, ratio, rng.uniform(0, np.pi) if angle is None else angle)
