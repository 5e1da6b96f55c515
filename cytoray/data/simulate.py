"""Embedded data: procedural FNAC-like breast cytology and H&E-like histology, with nucleus masks.

The main study must run on a fresh machine with no data, so cytoray draws its own. Each image
gets a latent *grade* g in [0, 1] drawn from a class-specific Beta distribution (benign
Beta(2, 4.5), malignant Beta(4.5, 2)); every cytological feature is a linear function of g
plus its own jitter. The two classes therefore overlap (about 14% of each class lies on the
other side of g = 0.5), so a small CNN should reach roughly 75-90%, not 100%.

Malignant (high g), as cytopathologists describe it: larger, more variable nuclei
(anisonucleosis), higher nucleus:cytoplasm ratio, coarse dark chromatin (hyperchromasia),
irregular contours, nucleoli, crowding and overlap, loss of cohesion (single cells). Benign
(low g): flat cohesive sheets with even spacing, small round nuclei, bare bipolar nuclei.
In histology: benign ducts are round lumens lined by one orderly layer of epithelium plus
myoepithelial cells; malignant glands are irregular, multilayered or solid, with crowded
pleomorphic nuclei and single cells infiltrating the stroma.

Real folders add what `acquisition.py` draws: single large Pap-like cells (a quarter of the
cytology images), per-image stain variation, and flat padding bands (30% of images).

Determinism: image i of a class depends only on np.random.default_rng([seed, kind_id,
class_id, i]) (geometry), the same key + [1] (pixel textures) and key + [2] (acquisition).
Geometry lives in relative units, so the same scene is rendered at 64 or 256 px. The tissue
scene is drawn in tissue.py, the acquisition (single cells, stains, padding) in acquisition.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import CytorayError
from ..io import atomic_dir, save_png, write_json
from .acquisition import P_PADDING, P_SINGLE_CELL, padding_bands, single_cell, stain_variation
from .acquisition import meta as acquisition_meta
from .features import (
    CYTOLOGY,
    FEATURE_JITTER,
    GIEMSA,
    HE,
    HISTOLOGY,
    PAP,
    Features,
    nucleus,
    palette,
    px,
)
from .nuclei import (
    draw_blob,
    draw_nucleus,
    draw_rbc,
    od_to_rgb,
    random_polygon,
    rgb_to_od,
    smooth_field,
    smooth_polygon,
    stretch,
)
from .tissue import histology

CLASSES = ("benign", "malignant")
KINDS = ("cytology", "histology")
GRADE_BETA = {"benign": (2.0, 4.5), "malignant": (4.5, 2.0)}


@dataclass
class SimulatedSet:
    images: np.ndarray  # uint8 [N, S, S, 3]
    masks: np.ndarray  # uint8 [N, S, S], 1 = nucleus
    labels: np.ndarray  # int64 [N], index into class_names
    class_names: tuple[str, ...]
    names: list[str]  # file stems, e.g. "benign_0000"
    kind: str  # "cytology" | "histology"
    # per image: "smear" | "single_cell" | "tissue", plus "+padded" when banded
    scenes: list[str] | None = None


# ----------------------------------------------------------------------------- cytology


def _cytology(
    rng: np.random.Generator, trng: np.random.Generator, size: int, grade: float
) -> tuple[np.ndarray, np.ndarray]:
    """One FNAC-like smear field: background, red cells, debris, cell groups and single cells."""
    f = Features(CYTOLOGY, grade, rng)
    pal = palette(rng, PAP, GIEMSA)
    od = np.zeros((size, size, 3), np.float32)
    mask = np.zeros((size, size), np.uint8)
    # 1. background: pale pink or blue-grey proteinaceous film with smooth variation.
    t = rng.uniform()
    bg = rgb_to_od(pal["bg_pink"] * (1 - t) + pal["bg_grey"] * t)
    field = smooth_field(rng.standard_normal((6, 6)), size)
    od += (np.clip(rng.uniform(0.8, 1.6) + 0.35 * field, 0, None))[..., None] * bg
    # 2. red blood cells: class-independent, small, pink-red, pale centres.
    for _ in range(int(rng.integers(0, 30))):
        c = rng.uniform(0, 1, 2)
        draw_rbc(
            od,
            tuple(c * size - 0.5),
            rng.uniform(0.025, 0.032) * size,
            pal["rbc"],
            rng.uniform(0.35, 0.6),
            ratio=rng.uniform(1.0, 1.25),
            angle=rng.uniform(0, np.pi),
        )
    # 3. debris: small irregular granular specks, not nuclei.
    for _ in range(int(rng.poisson(f["debris"]))):
        c = rng.uniform(0, 1, 2)
        poly = random_polygon(rng, c, rng.uniform(0.004, 0.014), 0.7, 0.45, 9)
        col = (pal["nucleus"], pal["cyan"], pal["pink"])[int(rng.integers(3))]
        draw_blob(od, trng, px(poly, size), col, rng.uniform(0.3, 0.9), 0.5, 0.3)
    # 4. epithelial cells: cohesive groups (hex lattice, jittered) plus dissociated singles.
    r_mean = f["nucleus_radius"]
    rc_mean = r_mean / f["nc_ratio"]
    n_cells = max(3, int(rng.poisson(f["cells"])))
    n_grouped = int(rng.binomial(n_cells, f["cohesion"]))
    centres: list[np.ndarray] = []
    if n_grouped > 0:
        n_groups = min(n_grouped, 1 + int(rng.poisson(0.3 + 1.6 * f.g["cohesion"])))
        sizes = 1 + rng.multinomial(n_grouped - n_groups, np.ones(n_groups) / n_groups)
        for k in sizes:
            centres.extend(_group(rng, int(k), rc_mean, f))
    centres.extend(rng.uniform(0.05, 0.95, (n_cells - n_grouped, 2)))
    p_pink = rng.uniform(0.1, 0.9)
    for c in centres:
        r = r_mean * np.exp(rng.normal(0, f["anisonucleosis"]))
        rc = r / np.clip(f["nc_ratio"] * np.exp(rng.normal(0, 0.08)), 0.3, 0.95)
        # Fragile malignant cells lose their cytoplasm (stripped nuclei).
        if rng.uniform() > 0.05 + 0.2 * f.g["cohesion"]:
            cyto = smooth_polygon(random_polygon(rng, c, rc, 0.35, 0.12, 10))
            col = pal["pink"] if rng.uniform() < p_pink else pal["cyan"]
            draw_blob(
                od,
                trng,
                px(cyto, size),
                col,
                rng.uniform(0.6, 0.95),
                max(0.5, 0.04 * rc * size),
                0.25,
            )
        off = (rc - r) * rng.uniform(0, 0.3 + 0.5 * f.g["nc_ratio"])
        a = rng.uniform(0, 2 * np.pi)
        cn = c + off * np.array([np.cos(a), np.sin(a)])
        poly = nucleus(rng, cn, r, f, ratio=1.0 + abs(rng.normal(0, 0.18)))
        draw_nucleus(
            od,
            mask,
            trng,
            px(poly, size),
            pal["nucleus"],
            f["chromatin"],
            density=f["hyperchromasia"] * rng.uniform(0.9, 1.1),
            nucleolus=f["nucleolus"] * rng.uniform(0.5, 1.0),
        )
    # 5. bare bipolar nuclei (benign hallmark): small dark ovals with no cytoplasm.
    for _ in range(int(rng.poisson(f["bare_nuclei"]))):
        c = rng.uniform(0.05, 0.95, 2)
        poly = stretch(
            random_polygon(rng, c, 0.022, 0.15, 0.05, 12),
            c,
            rng.uniform(1.6, 2.3),
            rng.uniform(0, np.pi),
        )
        draw_nucleus(od, mask, trng, px(poly, size), pal["nucleus"], 0.2, density=1.5)
    return od, mask


def _group(rng: np.random.Generator, k: int, rc: float, f: Features) -> list[np.ndarray]:
    """k cell centres in one group: the k lattice sites nearest a random (elliptical) centre."""
    d = 2 * rc * f["spacing"]
    centre = rng.uniform(0.2, 0.8, 2)
    n = int(np.ceil(np.sqrt(k))) + 3
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1))
    pts = np.stack([(i + 0.5 * (j % 2)).ravel() * d, j.ravel() * d * np.sqrt(3) / 2], axis=1)
    ang = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = pts @ rot.T
    aspect = rng.uniform(1.0, 2.0)
    u = pts @ rot[:, 0] / np.sqrt(aspect)
    v = pts @ rot[:, 1] * np.sqrt(aspect)
    score = np.hypot(u, v) * (1 + 0.35 * rng.uniform(size=len(pts)))  # ragged group edges
    chosen = pts[np.argsort(score)[:k]]
    chosen = chosen + rng.normal(0, f["disorder"] * d, chosen.shape)
    return list(centre + chosen)


# ----------------------------------------------------------------------------- public API


def _check(kind: str, n: int, size: int, seed: int) -> None:
    if kind not in KINDS:
        raise CytorayError(f"simulate: unknown kind={kind!r}; valid kinds: {', '.join(KINDS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise CytorayError(
            f"simulate: n={n!r} must be an integer >= 2 (one image per class at least)"
        )
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise CytorayError(f"simulate: size={size!r} must be an integer >= 16 pixels")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CytorayError(f"simulate: seed={seed!r} must be a non-negative integer")


def render(
    kind: str, class_id: int, index: int, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One image and its nucleus mask: (uint8 [S, S, 3], uint8 [S, S] with 1 = nucleus)."""
    img, mask, _ = render_scene(kind, class_id, index, size, seed)
    return img, mask


def render_scene(
    kind: str, class_id: int, index: int, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """`render` plus what was drawn: "smear" | "single_cell" | "tissue", "+padded" when banded.

    Scene (smear field, tissue, or for some cytology images one large cell), then the
    acquisition: stain variation, camera noise, and for some images padding bands
    (see acquisition.py; its choices come from a stream of their own, key + [2]).
    """

    kind_id = KINDS.index(kind)
    key = [int(seed), kind_id, int(class_id), int(index)]
    rng = np.random.default_rng(key)  # geometry: identical scene at every size
    trng = np.random.default_rng(key + [1])  # pixel textures: depend on size
    # acquisition: scene type, stain, padding (class-independent)
    acq = np.random.default_rng(key + [2])
    grade = float(rng.beta(*GRADE_BETA[CLASSES[class_id]]))
    one_cell = kind == "cytology" and acq.uniform() < P_SINGLE_CELL
    scene = single_cell if one_cell else (_cytology if kind == "cytology" else histology)
    od, mask = scene(rng, trng, size, grade)
    od, illumination = stain_variation(od, acq)
    od += 0.012 * trng.standard_normal(od.shape).astype(np.float32)  # camera noise
    rgb = od_to_rgb(od, illumination=illumination)
    name = "single_cell" if one_cell else ("smear" if kind == "cytology" else "tissue")
    if acq.uniform() < P_PADDING:
        padding_bands(rgb, mask, acq)
        name += "+padded"
    return rgb, mask, name


def class_counts(n: int) -> dict[str, int]:
    """Even split between classes; an odd n gives benign the extra image."""
    return {"benign": n - n // 2, "malignant": n // 2}


def simulate(kind: str = "cytology", n: int = 150, size: int = 64, seed: int = 0) -> SimulatedSet:
    """Simulate `n` images (benign first) of `kind` at `size` px, deterministic for `seed`."""
    _check(kind, n, size, seed)
    images, masks, labels, names, scenes = [], [], [], [], []
    for class_id, name in enumerate(CLASSES):
        for i in range(class_counts(n)[name]):
            img, m, scene = render_scene(kind, class_id, i, size, seed)
            images.append(img)
            masks.append(m)
            labels.append(class_id)
            names.append(f"{name}_{i:04d}")
            scenes.append(scene)
    return SimulatedSet(
        np.stack(images),
        np.stack(masks),
        np.asarray(labels, np.int64),
        CLASSES,
        names,
        kind,
        scenes,
    )


def write_dataset(
    out: str | Path,
    kind: str = "cytology",
    n: int = 150,
    size: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write `<out>/<class>/<stem>.png`, `<out>/<class>/masks/<stem>.png` (0/255) and
    `<out>/simulation.json`, all at once (a failure leaves no half-written folder)."""

    _check(kind, n, size, seed)
    out = Path(out)
    sim = simulate(kind, n, size, seed)
    table = CYTOLOGY if kind == "cytology" else HISTOLOGY
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for img, m, label, stem in zip(sim.images, sim.masks, sim.labels, sim.names):
            cls = CLASSES[int(label)]
            save_png(tmp / cls / f"{stem}.png", img)
            save_png(tmp / cls / "masks" / f"{stem}.png", (m * 255).astype(np.uint8))
        write_json(
            tmp / "simulation.json",
            {
                "kind": kind,
                "n": n,
                "size": size,
                "seed": seed,
                "counts": class_counts(n),
                "classes": list(CLASSES),
                "cytoray_version": __version__,
                "generator": {
                    "module": "cytoray.data.simulate",
                    "rng": "numpy default_rng([seed, kind_id, class_id, index]); textures: key + [1]; acquisition: key + [2]",
                    "acquisition": acquisition_meta(),
                    "kind_ids": {k: i for i, k in enumerate(KINDS)},
                    "grade_beta": {k: list(v) for k, v in GRADE_BETA.items()},
                    "feature_jitter": FEATURE_JITTER,
                    "features_at_grade_0_and_1": {k: list(v) for k, v in table.items()},
                    "palettes": {"pap": PAP, "giemsa": GIEMSA}
                    if kind == "cytology"
                    else {"he": HE},
                },
            },
        )
    return out
