"""What real folders do to images that the smear/tissue simulator alone did not: the failure
modes a nucleus-mask method must survive, so the default study exercises them.

    single large cells   Pap-smear crops of one cell (Herlev-like): a large cytoplasm with
                         folds, one nucleus whose size follows the grade (N:C ratio), coarse
                         chromatin with clear spaces in high grades
    stain variation      per-image stain strength and hue (OD mixing) and a tinted illumination,
                         as between labs and scanners
    padding bands        flat bands of one colour on two opposite edges (a crop padded to a
                         square), drawn over the scene; the mask is 0 there

Every choice comes from the image's own acquisition stream (np.random.default_rng(key + [2])),
so scenes drawn before keep their geometry; all three are independent of the class, so they
add variety without carrying label information. Sizes are relative to the image side.
"""

from __future__ import annotations

import numpy as np

# share of cytology images that are one large cell (Herlev-like) instead of a smear field
P_SINGLE_CELL = 0.25
P_PADDING = 0.3  # share of images padded with flat bands (Herlev: nearly all; a study folder: some)
PAD_WIDTH = (0.06, 0.22)  # band width per edge, fraction of the side (Herlev: 0.02-0.34)
STAIN_STRENGTH_SD = 0.15  # log-sd of overall stain uptake between images
STAIN_MIX_SD = 0.06  # sd of the off-diagonal OD mixing (hue shift of every stain)
TINT_SD = 0.03  # log-sd of the illumination per channel (white balance)

# Single large cell, as feature (value at grade 0,
# value at grade 1); radii are fractions of the side.
SINGLE_CELL = {
    # superficial/intermediate cells are large, dysplastic ones smaller
    "cell_radius": (
        0.40,
        0.30,
    ),
    "nc_ratio": (0.16, 0.62),  # nucleus radius / cell radius: the main Pap criterion
    "irregularity": (0.10, 0.55),
    "spikiness": (0.03, 0.18),
    "chromatin": (0.30, 1.00),  # coarse clumps with clear spaces at high grade: textured nuclei
    "hyperchromasia": (1.10, 1.60),
    "nucleolus": (0.0, 0.8),
    "folds": (3.0, 1.0),  # cytoplasm folds (thin dense ridges; never nuclei)
}


# ----------------------------------------------------------------------------- single cell


def single_cell(
    rng: np.random.Generator, trng: np.random.Generator, size: int, grade: float
) -> tuple[np.ndarray, np.ndarray]:
    """One large Pap-stained cell on glass: OD canvas [S, S, 3] and nucleus mask [S, S]."""
    from .features import GIEMSA, PAP, Features, palette, px
    from .nuclei import (
        draw_blob,
        draw_nucleus,
        random_polygon,
        rgb_to_od,
        smooth_field,
        smooth_polygon,
        stretch,
    )

    f = Features(SINGLE_CELL, grade, rng)
    pal = palette(rng, PAP, GIEMSA)
    od = np.zeros((size, size, 3), np.float32)
    mask = np.zeros((size, size), np.uint8)
    # 1. glass with a faint film
    field = smooth_field(rng.standard_normal((5, 5)), size)
    od += np.clip(rng.uniform(0.3, 0.8) + 0.2 * field, 0, None)[..., None] * rgb_to_od(
        pal["bg_grey"]
    )
    # 2. neighbours cut by the frame (their nuclei are nuclei too)
    for _ in range(int(rng.integers(0, 3))):
        side = rng.uniform(0, 2 * np.pi)
        c = 0.5 + 0.62 * np.array([np.cos(side), np.sin(side)])
        rc = rng.uniform(0.2, 0.3)
        col = pal["pink"] if rng.uniform() < 0.5 else pal["cyan"]
        draw_blob(
            od,
            trng,
            px(smooth_polygon(random_polygon(rng, c, rc, 0.3, 0.1, 12)), size),
            col,
            rng.uniform(0.5, 0.9),
            0.01 * size,
            0.2,
        )
        cn = c + rng.normal(0, 0.05, 2)
        draw_nucleus(
            od,
            mask,
            trng,
            px(smooth_polygon(random_polygon(rng, cn, 0.05, 0.2, 0.05, 12)), size),
            pal["nucleus"],
            0.3,
            density=1.3,
        )
    # 3. the cell: a large irregular cytoplasm, pink (eosinophilic) or cyan (cyanophilic)
    c = 0.5 + rng.normal(0, 0.04, 2)
    rc = f["cell_radius"] * rng.uniform(0.9, 1.1)
    cyto = stretch(
        smooth_polygon(random_polygon(rng, c, rc, 0.35, 0.12, 14)),
        c,
        rng.uniform(1.0, 1.5),
        rng.uniform(0, np.pi),
    )
    col = pal["pink"] if rng.uniform() < 0.5 else pal["cyan"]
    draw_blob(od, trng, px(cyto, size), col, rng.uniform(0.6, 1.0), max(0.5, 0.01 * size), 0.3)
    # 4. folds: thin dense ridges inside the cytoplasm, the usual false nucleus of a naive mask
    for _ in range(int(rng.poisson(f["folds"]))):
        p = c + rng.normal(0, 0.5 * rc, 2)
        ridge = stretch(
            random_polygon(rng, p, 0.045, 0.2, 0.05, 10),
            p,
            rng.uniform(10, 18),
            rng.uniform(0, np.pi),
        )
        draw_blob(od, trng, px(ridge, size), col, rng.uniform(0.5, 1.0), 0.4, 0.2)
    # 5. the nucleus, off-centre a little; coarse chromatin at high
    # grade (textured, with clear spaces)
    r = rc * f["nc_ratio"] * rng.uniform(0.9, 1.1)
    cn = c + rng.normal(0, 0.15 * (rc - r), 2)
    poly = stretch(
        smooth_polygon(random_polygon(rng, cn, r, f["irregularity"], f["spikiness"], 14)),
        cn,
        1 + abs(rng.normal(0, 0.2)),
        rng.uniform(0, np.pi),
    )
    draw_nucleus(
        od,
        mask,
        trng,
        px(poly, size),
        pal["nucleus"],
        f["chromatin"],
        density=f["hyperchromasia"],
        nucleolus=f["nucleolus"],
        rim=0.5,
    )
    return od, mask


# ----------------------------------------------------------------------------- acquisition


def stain_variation(od: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(OD canvas with this image's stain strength and hue, illumination RGB for od_to_rgb)."""
    mix = np.eye(3) + rng.normal(0, STAIN_MIX_SD, (3, 3)) * (1 - np.eye(3))
    # columns sum to 1: a grey stays grey, so hue moves and density does not
    mix /= mix.sum(axis=0, keepdims=True)
    strength = np.exp(rng.normal(0, STAIN_STRENGTH_SD))
    tint = np.clip(0.98 * np.exp(rng.normal(0, TINT_SD, 3)), 0.85, 1.0)
    return (od @ mix.astype(np.float32)) * np.float32(strength), tint


def padding_bands(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Overwrite two opposite edges with one flat colour (in place); the mask is 0 there."""
    size = rgb.shape[0]
    w = [max(1, int(round(rng.uniform(*PAD_WIDTH) * size))) for _ in range(2)]
    # Herlev pads in grey, mauve, slate: a muted colour of any lightness
    grey = rng.uniform(0.35, 0.9)
    colour = np.clip(np.rint(255 * (grey + rng.normal(0, 0.06, 3))), 0, 255).astype(np.uint8)
    if rng.uniform() < 0.5:
        rgb[: w[0]], rgb[size - w[1] :] = colour, colour
        mask[: w[0]], mask[size - w[1] :] = 0, 0
    else:
        rgb[:, : w[0]], rgb[:, size - w[1] :] = colour, colour
        mask[:, : w[0]], mask[:, size - w[1] :] = 0, 0


def meta() -> dict:
    """The acquisition settings, for simulation.json."""
    return {
        "p_single_cell": P_SINGLE_CELL,
        "p_padding": P_PADDING,
        "pad_width": list(PAD_WIDTH),
        "stain_strength_sd": STAIN_STRENGTH_SD,
        "stain_mix_sd": STAIN_MIX_SD,
        "tint_sd": TINT_SD,
        "single_cell_features_at_grade_0_and_1": {k: list(v) for k, v in SINGLE_CELL.items()},
    }
