"""The H&E-like tissue scene of the embedded simulator: fibrous eosin stroma, glands or tumour
nests lined by nuclei, stromal nuclei (see simulate.py for the grade model and determinism)."""

from __future__ import annotations

import numpy as np

from .features import HE, HISTOLOGY, Features, nucleus, palette, px
from .nuclei import (
    collagen,
    draw_blob,
    draw_nucleus,
    points_inside,
    polygon_alpha,
    random_polygon,
    resample_contour,
    rgb_to_od,
    scale_polygon,
    smooth_field,
    stretch,
)

# ----------------------------------------------------------------------------- histology


def histology(
    rng: np.random.Generator, trng: np.random.Generator, size: int, grade: float
) -> tuple[np.ndarray, np.ndarray]:
    """One H&E-like field: fibrous eosin stroma, glands or nests, stromal nuclei."""
    f = Features(HISTOLOGY, grade, rng)
    pal = palette(rng, HE)
    od = np.zeros((size, size, 3), np.float32)
    mask = np.zeros((size, size), np.uint8)
    r_mean = f["nucleus_radius"]
    # 1. glands: outline polygons placed without heavy overlap (geometry only, no pixels).
    outlines: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(1 + int(rng.poisson(f["glands"] - 1))):
        big_r = f["gland_radius"] * rng.uniform(0.7, 1.3)
        for _try in range(12):
            c = rng.uniform(0.1, 0.9, 2)
            if all(np.hypot(*(c - c2)) > 0.85 * (big_r + r2) for _, c2, r2 in outlines):
                break
        else:
            continue
        poly = random_polygon(rng, c, big_r, f["gland_irregularity"], f["gland_spikiness"], 24)
        poly = stretch(poly, c, rng.uniform(1.0, 1.7), rng.uniform(0, np.pi))
        outlines.append((poly, c, big_r))
    # 2. stroma: wavy collagen bundles with clefts, paler loose areas, minus glands.
    theta = rng.uniform(0, np.pi)
    fib = collagen(rng, trng, size, theta)
    loose = smooth_field(rng.standard_normal((5, 5)), size)
    stroma = rng.uniform(0.8, 1.2) * fib * (1 - 0.5 / (1 + np.exp(-3 * (loose - 0.7))))
    gland_a = np.zeros((size, size), np.float32)
    lumen_a = np.zeros((size, size), np.float32)
    for poly, c, big_r in outlines:
        lumen = _gland(rng, trng, od, mask, poly, c, big_r, f, pal, size)
        _union(gland_a, px(poly, size), max(0.6, 0.01 * size))
        if lumen is not None:
            _union(lumen_a, px(lumen, size), max(0.5, 0.004 * size))
    epithelium = np.clip(gland_a - 0.92 * lumen_a, 0, 1)  # a faint pink secretion stays in lumens
    od += (stroma * (1 - gland_a))[..., None] * rgb_to_od(pal["eosin"])
    od += (epithelium * rng.uniform(0.6, 0.85))[..., None] * rgb_to_od(pal["epithelium"])
    # 3. nuclei in the stroma: spindle fibroblasts along fibres, lymphocytes, infiltrating cells.
    for kind, mean in (
        ("fibro", f["stromal_nuclei"]),
        ("lympho", f["lymphocytes"]),
        ("tumour", f["infiltrating"]),
    ):
        for _ in range(int(rng.poisson(mean))):
            c = rng.uniform(0.03, 0.97, 2)
            if any(points_inside(o, c[None])[0] for o, _, _ in outlines):
                continue  # stromal cells stay outside glands (decided in geometry, not pixels)
            if kind == "fibro":
                poly = random_polygon(rng, c, 0.014, 0.2, 0.08, 12)  # long axis along the fibres
                poly = stretch(poly, c, rng.uniform(3, 5), theta + rng.normal(0, 0.3))
                draw_nucleus(od, mask, trng, px(poly, size), pal["nucleus"], 0.2, density=1.4)
            elif kind == "lympho":
                poly = random_polygon(rng, c, 0.012, 0.1, 0.04, 12)
                draw_nucleus(od, mask, trng, px(poly, size), pal["nucleus"], 0.3, density=2.0)
            else:
                r = r_mean * np.exp(rng.normal(0, f["anisonucleosis"]))
                cyto = random_polygon(rng, c, r * 1.6, 0.3, 0.1, 12)
                draw_blob(od, trng, px(cyto, size), pal["epithelium"], 0.4, 0.8)
                draw_nucleus(
                    od,
                    mask,
                    trng,
                    px(nucleus(rng, c, r, f), size),
                    pal["nucleus"],
                    f["chromatin"],
                    density=f["hyperchromasia"],
                    nucleolus=f["nucleolus"],
                )
    return od, mask


def _union(target: np.ndarray, polygon_px: np.ndarray, softness: float) -> None:
    """target = max(target, soft alpha of polygon), in place."""
    got = polygon_alpha(polygon_px, target.shape, softness)
    if got is not None:
        sl, _, alpha = got
        np.maximum(target[sl], alpha, out=target[sl])


def _gland(
    rng: np.random.Generator,
    trng: np.random.Generator,
    od: np.ndarray,
    mask: np.ndarray,
    poly: np.ndarray,
    c: np.ndarray,
    big_r: float,
    f: Features,
    pal: dict[str, np.ndarray],
    size: int,
) -> np.ndarray | None:
    """Draw the epithelial nuclei of one gland in concentric layers; return its lumen polygon
    (relative units) or None for a solid nest.

    Benign: one orderly layer of columnar nuclei perpendicular to the wall, a myoepithelial rim,
    a wide lumen. Malignant: several crowded, jittered layers in random orientations and a
    small or absent lumen (solid nest).
    """
    r_mean = f["nucleus_radius"]
    step = 2 * r_mean * f["spacing"]
    n_layers = int(np.clip(round(f["layers"] + rng.normal(0, 0.5)), 1, 8))
    start = 0.0
    if rng.uniform() < f["myoepithelium"]:
        pts, tang = resample_contour(
            scale_polygon(poly, c, 1 - 0.6 * r_mean / big_r), 3.5 * r_mean, rng.uniform(0, 1)
        )
        for p, t in zip(pts, tang):
            # flat, along the basement membrane
            q = random_polygon(rng, p, 0.7 * r_mean, 0.15, 0.05, 12)
            q = stretch(q, p, rng.uniform(2.0, 2.8), np.arctan2(t[1], t[0]))
            draw_nucleus(od, mask, trng, px(q, size), pal["nucleus"], 0.2, density=1.4)
        start = 1.2 * r_mean
    lumen_s = 1 - (start + n_layers * step + 1.6 * r_mean) / big_r  # + apical cytoplasm
    for k in range(n_layers):
        s = 1 - (start + (k + 0.5) * step) / big_r
        if s <= 0.05:
            break
        pts, tang = resample_contour(scale_polygon(poly, c, s), step, rng.uniform(0, 1))
        for p, t in zip(pts, tang):
            p = p + rng.normal(0, f["disorder"] * step, 2)
            r = r_mean * np.exp(rng.normal(0, f["anisonucleosis"]))
            # polarity: long axis normal to the wall, lost with disorder
            ang = np.arctan2(t[1], t[0]) + np.pi / 2 + rng.normal(0, np.pi * f["disorder"])
            ratio = 1.0 + (0.5 - 0.3 * f.g["disorder"]) * rng.uniform(0.6, 1.0)
            draw_nucleus(
                od,
                mask,
                trng,
                px(nucleus(rng, p, r, f, ratio, ang), size),
                pal["nucleus"],
                f["chromatin"],
                density=f["hyperchromasia"] * rng.uniform(0.9, 1.1),
                nucleolus=f["nucleolus"] * rng.uniform(0.5, 1.0),
            )
    return scale_polygon(poly, c, lumen_s) if lumen_s > 0.12 else None
