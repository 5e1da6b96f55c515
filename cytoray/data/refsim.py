"""Initial synthesis from a real reference tile (Hou et al., CVPR 2019, §3.1): polygon nuclei
with exact masks, drawn with textures taken from a real H&E tile.

1. Reference (`Reference.from_tile`): colour deconvolution (`skimage.color.rgb2hed`), Otsu on
   the haematoxylin channel marks the tile's nuclei; the nuclei are inpainted out of the tile
   (the background texture) and, symmetrically, the background is inpainted out of the nuclei
   (a nucleus texture field). The tile's nucleus radius and nuclear cover are measured, so
   density and size are drawn around what the reference shows (no hand-set pixel sizes).
2. Image (`initial_image`): a crop of the background, then per image a nuclear cover and a
   mean radius (drawn), random-polygon nuclei (`data/nuclei.py`) placed with limited overlap,
   each filled with a crop of the nucleus texture at a jittered stain density; clutter
   (nucleus-textured debris and fibres) that is NOT in the mask, so a segmenter must learn
   shape as well as colour. The mask is the exact union of the drawn polygons.

Inpainting fills a hole with shifted copies of known pixels (real texture, not a blur) and
closes what is left by normalised convolution. Everything is numpy/scipy; seeded by `rng`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, DataError
from .nuclei import polygon_alpha, random_polygon, rgb_to_od, smooth_polygon, stretch

# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass
class SynthesisConfig:
    """How initial images are drawn (keys and reasons: configs/models/refined-sim.yaml)."""

    # nuclear cover per image, x the reference's (density drawn per image)
    cover: list[float] = dataclasses.field(default_factory=lambda: [0.5, 1.5])
    # mean nucleus radius per image, x the reference's (size drawn per image)
    radius: list[float] = dataclasses.field(default_factory=lambda: [0.8, 1.6])
    anisonucleosis: float = 0.2  # log-sd of radii within one image (pleomorphism)
    irregularity: float = 0.3  # polygon angle jitter (data/nuclei.random_polygon)
    # polygon radius jitter; smoothed afterwards, so contours stay round-ish
    spikiness: float = 0.12
    elongation: float = 0.3  # half-normal sd of the long/short axis ratio above 1
    # centres may come this fraction of r1+r2 closer than touching (crowded nuclei)
    overlap: float = 0.15
    # log-sd of each nucleus's stain density (hyper/hypochromatic nuclei)
    density_jitter: float = 0.2
    # clutter objects per nucleus: debris and fibres with nuclear stain, never in the mask
    clutter: float = 0.3
    # floor of the measured reference radius: Otsu on a tiny tile can return specks
    min_radius_px: float = 2.0

    def validate(self) -> None:
        for k in ("cover", "radius"):
            lo_hi = getattr(self, k)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
                raise ConfigError(f"synthesis.{k}={lo_hi}: give [low, high] with 0 < low <= high")
        for k in (
            "anisonucleosis",
            "irregularity",
            "spikiness",
            "elongation",
            "density_jitter",
            "clutter",
        ):
            if getattr(self, k) < 0:
                raise ConfigError(f"synthesis.{k}={getattr(self, k)}: must be >= 0")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"synthesis.overlap={self.overlap}: must lie in [0, 1)")
        if self.min_radius_px <= 0:
            raise ConfigError(f"synthesis.min_radius_px={self.min_radius_px}: must be > 0")


# ----------------------------------------------------------------------------- reference


def otsu_haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """The floor method: Otsu's threshold on the haematoxylin channel of colour deconvolution."""
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu

    h = rgb2hed(np.asarray(rgb, dtype=np.uint8))[..., 0]
    if float(h.max() - h.min()) < 1e-6:
        return np.zeros(h.shape, bool)
    return h > threshold_otsu(h)


def inpaint(
    img: np.ndarray, known: np.ndarray, rng: np.random.Generator, shift: float, tries: int = 24
) -> np.ndarray:
    """Fill `~known` pixels of float [H,W,C] with known pixels copied from random shifts of up to
    `shift` px (keeps real texture), then close the rest by normalised Gaussian convolution."""
    out, have = img.copy(), known.copy()
    h, w = have.shape
    for _ in range(tries):
        if have.all():
            break
        dy, dx = (int(v) for v in rng.integers(-int(shift), int(shift) + 1, 2))
        src_have = np.roll(have & known, (dy, dx), (0, 1))
        take = ~have & src_have
        out[take] = np.roll(img, (dy, dx), (0, 1))[take]
        have |= take
    sigma = max(1.0, shift / 4)
    while not have.all():  # tiny images or a tile that is nearly all one class
        wsum = ndimage.gaussian_filter(have.astype(np.float32), sigma)
        num = np.stack(
            [ndimage.gaussian_filter(out[..., c] * have, sigma) for c in range(out.shape[-1])], -1
        )
        fill = (~have) & (wsum > 1e-3)
        out[fill] = num[fill] / wsum[fill][:, None]
        have |= fill
        sigma *= 2
        if sigma > 4 * max(h, w):
            out[~have] = img[known].mean(0) if known.any() else img.mean((0, 1))
            break
    return out


@dataclasses.dataclass
class Reference:
    """Textures and measurements of one real reference tile (all at working resolution)."""

    background: np.ndarray  # float32 [H,W,3] optical density, nuclei inpainted out
    nucleus: np.ndarray  # float32 [H,W,3] optical density of nuclei, background inpainted out
    radius: float  # median equivalent radius of the tile's nuclei (px)
    cover: float  # fraction of the tile Otsu marks as nucleus

    @classmethod
    def from_tile(
        cls,
        rgb: np.ndarray,
        rng: np.random.Generator,
        min_radius: float = 2.0,
        name: str = "reference tile",
    ) -> Reference:

        rgb = np.asarray(rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or min(rgb.shape[:2]) < 16:
            raise DataError(
                f"{name}: expected an RGB tile of at least 16x16 px, got shape {rgb.shape}"
            )
        # 1. Nuclei by Otsu on haematoxylin, speckle removed and pale chromatin filled. A nucleus's
        #    radius is its largest inscribed distance (distance-transform peak): unlike its area,
        # that stays right when Otsu merges a row of nuclei into one band or splits one in specks.
        m = ndimage.binary_fill_holes(
            ndimage.binary_closing(ndimage.binary_opening(otsu_haematoxylin(rgb)))
        )
        labels, n = ndimage.label(m)
        if n == 0 or m.mean() < 1e-3:
            raise DataError(
                f"{name}: Otsu on haematoxylin finds no nuclei; "
                "give an H&E tile with nuclei as the reference"
            )
        peaks = np.asarray(
            ndimage.maximum(ndimage.distance_transform_edt(m), labels, np.arange(1, n + 1)), float
        )
        big = peaks[peaks >= min_radius]
        radius = max(min_radius, float(np.median(big if len(big) else peaks)))
        # 2. Inpaint each class out of the other (mask dilated:
        # nucleus rims are blurred in the tile).
        od = rgb_to_od(rgb.astype(np.float32) / 255.0)
        grow = ndimage.binary_dilation(m, iterations=max(1, int(round(0.3 * radius))))
        core = (
            ndimage.binary_erosion(m, iterations=max(0, int(round(0.15 * radius))))
            if radius > 4
            else m
        )
        bg = inpaint(od, ~grow, rng, 3 * radius)
        nuc = inpaint(od, core if core.any() else m, rng, 3 * radius)
        return cls(bg.astype(np.float32), nuc.astype(np.float32), radius, float(m.mean()))


def measure(
    tiles: np.ndarray, seed: int, min_radius: float = 2.0, names: list[str] | None = None
) -> list[Reference]:
    """One `Reference` per tile (uint8 [N,H,W,3])."""
    rng = np.random.default_rng(seed)
    return [
        Reference.from_tile(t, rng, min_radius, names[i] if names else f"reference tile {i}")
        for i, t in enumerate(tiles)
    ]


# ----------------------------------------------------------------------------- drawing


def _crop(field: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random size x size crop (tiled by reflection when the field is smaller), flipped/rotated."""
    h, w = field.shape[:2]
    if h < size or w < size:
        field = np.pad(
            field, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect"
        )
        h, w = field.shape[:2]
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    out = field[y : y + size, x : x + size]
    return np.rot90(out[:, ::-1] if rng.uniform() < 0.5 else out, int(rng.integers(4)))


def _place(
    rng: np.random.Generator, n: int, radii: np.ndarray, size: int, overlap: float
) -> list[tuple[np.ndarray, float]]:
    """Centres for up to n nuclei (px) with limited overlap; a nucleus that finds no room is dropped."""
    placed: list[tuple[np.ndarray, float]] = []
    for r in radii[:n]:
        for _ in range(15):
            # nuclei may be cut by the edge, as in a crop
            c = rng.uniform(-0.3 * r, size + 0.3 * r, 2)
            if all(np.hypot(*(c - c2)) >= (1 - overlap) * (r + r2) for c2, r2 in placed):
                placed.append((c, float(r)))
                break
    return placed


def _stamp(
    od: np.ndarray,
    texture: np.ndarray,
    poly: np.ndarray,
    density: float,
    softness: float,
    replace: bool,
) -> np.ndarray | None:
    """Composite `texture` inside `poly` onto `od` (replacing the background under a nucleus,
    adding on top for clutter); returns the polygon's hard raster on the full canvas."""
    got = polygon_alpha(poly, od.shape[:2], softness)
    if got is None:
        return None
    sl, hard, alpha = got
    a = np.clip(alpha, 0, 1)[..., None]
    tex = texture[sl] * density
    od[sl] = od[sl] * (1 - a) + tex * a if replace else od[sl] + tex * a * 0.6
    full = np.zeros(od.shape[:2], bool)
    full[sl] = hard
    return full


def initial_image(
    ref: Reference, size: int, rng: np.random.Generator, cfg: SynthesisConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One initial synthetic image (uint8 [S,S,3]) and its exact nucleus mask (bool [S,S])."""
    # 1. Background texture: a crop of the reference tile with its nuclei inpainted out.
    od = _crop(ref.background, size, rng).astype(np.float32).copy()
    tex = _crop(ref.nucleus, size, rng).astype(np.float32)
    # 2. Density and size drawn per image around the reference's measurements.
    r_mean = ref.radius * rng.uniform(*cfg.radius)
    cover = min(0.6, ref.cover * rng.uniform(*cfg.cover))
    n = int(rng.poisson(cover * size * size / (np.pi * r_mean**2)))
    radii = r_mean * np.exp(rng.normal(0, cfg.anisonucleosis, max(n, 1)))
    mask = np.zeros((size, size), bool)
    soft = max(0.4, 0.08 * r_mean)
    # 3. Nuclei: smoothed random polygons with the nucleus texture, exact masks.
    for c, r in _place(rng, n, radii, size, cfg.overlap):
        poly = smooth_polygon(random_polygon(rng, c, r, cfg.irregularity, cfg.spikiness, 12))
        poly = stretch(poly, c, 1 + abs(rng.normal(0, cfg.elongation)), rng.uniform(0, np.pi))
        hard = _stamp(
            od, tex, poly, float(np.exp(rng.normal(0, cfg.density_jitter))), soft, replace=True
        )
        if hard is not None:
            mask |= hard
    # 4. Clutter: nucleus-stained debris and thin fibres, drawn faint and never in the mask.
    for _ in range(int(rng.poisson(cfg.clutter * max(n, 1)))):
        c = rng.uniform(0, size, 2)
        if rng.uniform() < 0.5:  # debris: a small ragged speck
            poly = random_polygon(rng, c, r_mean * rng.uniform(0.2, 0.45), 0.8, 0.5, 8)
        else:  # fibre: a long thin sliver
            poly = stretch(
                random_polygon(rng, c, r_mean * 0.5, 0.2, 0.1, 10),
                c,
                rng.uniform(6, 12),
                rng.uniform(0, np.pi),
            )
        _stamp(od, tex, poly, rng.uniform(0.3, 0.7), soft, replace=False)
    rgb = np.exp(-np.clip(od, 0, None)) * 255.0 + 0.5
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def initial_images(
    refs: list[Reference], which: np.ndarray, size: int, seed: int, cfg: SynthesisConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Initial images (uint8 [N,S,S,3]) and masks (bool [N,S,S]); image i uses reference which[i]
    and its own stream default_rng([seed, i]), so any subset is reproducible."""
    imgs = np.zeros((len(which), size, size, 3), np.uint8)
    masks = np.zeros((len(which), size, size), bool)
    for i, t in enumerate(which):
        imgs[i], masks[i] = initial_image(refs[int(t)], size, np.random.default_rng([seed, i]), cfg)
    return imgs, masks


# ----------------------------------------------------------------------------- real tiles


def _pairs(root: Path) -> list[tuple[Path, Path | None, str]]:
    """(image, mask or None, class) of a folder: `<root>/images/ + <root>/masks/` (BreCaHAD's
    layout) or the project's `<root>/<class>/*.png + <class>/masks/`; a mask has its image's stem."""
    from ..io import is_image_name

    def mask_of(mdir: Path, stem: str) -> Path | None:
        hits = [p for p in mdir.glob(f"{stem}.*") if is_image_name(p)] if mdir.is_dir() else []
        return hits[0] if hits else None

    if (root / "images").is_dir():
        return [
            (p, mask_of(root / "masks", p.stem), "images")
            for p in sorted((root / "images").iterdir())
            if is_image_name(p)
        ]
    out = []
    for cdir in sorted(
        d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "masks"
    ):
        out += [
            (p, mask_of(cdir / "masks", p.stem), cdir.name)
            for p in sorted(cdir.iterdir())
            if is_image_name(p)
        ]
    return out


def _scaled(arr: np.ndarray, scale: float, resample) -> np.ndarray:
    from PIL import Image

    if scale == 1:
        return arr
    h, w = arr.shape[:2]
    return np.asarray(
        Image.fromarray(arr).resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
    )


def cut_tiles(arr: np.ndarray, tile: int) -> list[tuple[int, int, np.ndarray]]:
    """Non-overlapping tile x tile squares, as many as fit, the grid centred: (y, x, tile)."""
    h, w = arr.shape[:2]
    ny, nx = h // tile, w // tile
    y0, x0 = (h - ny * tile) // 2, (w - nx * tile) // 2
    return [
        (
            y0 + i * tile,
            x0 + j * tile,
            arr[y0 + i * tile : y0 + (i + 1) * tile, x0 + j * tile : x0 + (j + 1) * tile],
        )
        for i in range(ny)
        for j in range(nx)
    ]


def load_tiles(
    root: str | Path, scale: float, tile: int, mask_threshold: int = 127, need_masks: bool = True
):
    """Real images (and nucleus masks) resized by `scale` and cut into tiles, as an ImageSet whose
    `groups` name the source file (tiles of one image never straddle splits). Masks: grey level
    above `mask_threshold` (JPEG masks ring near edges), resized as grey and thresholded again."""
    import hashlib

    from PIL import Image

    from .folder import ImageSet
    from .images import read_rgb

    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: folder not found; give <root>/images + "
            "<root>/masks or <root>/<class>/*.png + <class>/masks/"
        )
    pairs = _pairs(root)
    if not pairs:
        raise DataError(
            f"{root}: no images (expected <root>/images/*.jpg + "
            "<root>/masks/ or <root>/<class>/*.png + <class>/masks/)"
        )
    classes = sorted({c for _, _, c in pairs})
    imgs, masks, labels, names, groups = [], [], [], [], []
    for path, mpath, cls in pairs:
        if need_masks and mpath is None:
            raise DataError(
                f"{path}: no nucleus mask with the same stem in its "
                "masks/ folder; add it (validation and test need masks)"
            )
        rgb = _scaled(read_rgb(path), scale, Image.BICUBIC)
        m = None
        if mpath is not None:
            grey = np.asarray(Image.open(mpath).convert("L"))
            if grey.shape != read_rgb(path).shape[:2]:
                raise DataError(
                    f"{mpath}: mask is {grey.shape[1]}x{grey.shape[0]} px "
                    "but its image is not; masks must match their images"
                )
            m = (
                _scaled(((grey > mask_threshold) * 255).astype(np.uint8), scale, Image.BILINEAR)
                > 127
            )
        cut = cut_tiles(rgb, tile)
        if not cut:
            raise DataError(
                f"{path}: {rgb.shape[1]}x{rgb.shape[0]} px after scale {scale} is "
                f"smaller than one {tile} px tile; lower data.tile or raise data.scale"
            )
        for y, x, t in cut:
            imgs.append(t)
            masks.append(None if m is None else m[y : y + tile, x : x + tile])
            labels.append(classes.index(cls))
            names.append(f"{path.relative_to(root)}#{y},{x}")
            groups.append(str(path.relative_to(root)))
    images = np.stack(imgs)
    return ImageSet(
        images=images,
        labels=np.asarray(labels, np.int64),
        class_names=tuple(classes),
        names=names,
        sha256=[hashlib.sha256(t.tobytes()).hexdigest() for t in images],
        masks=np.stack(masks) if all(m is not None for m in masks) else None,
        groups=groups,
        source=f"{root.resolve()} (scale {scale:g}, {tile} px tiles)",
    )


def split_groups(groups: list[str], ratios: list[float], seed: int) -> dict[str, np.ndarray]:
    """Seeded train/val/test indices by group (source image), in proportion to `ratios`; val and
    test get at least one group each when their ratio is > 0 and there are enough groups."""
    uniq = sorted(set(groups))
    order = [uniq[i] for i in np.random.default_rng(seed).permutation(len(uniq))]
    r = np.asarray(ratios, float) / float(sum(ratios))
    n_val, n_test = (max(1 if r[k] > 0 else 0, int(round(r[k] * len(uniq)))) for k in (1, 2))
    if len(uniq) - n_val - n_test < 1:
        raise DataError(
            f"{len(uniq)} source images cannot make train/val/test splits at {ratios}; add images"
        )
    parts = {
        "val": set(order[:n_val]),
        "test": set(order[n_val : n_val + n_test]),
        "train": set(order[n_val + n_test :]),
    }
    return {
        s: np.asarray([i for i, g in enumerate(groups) if g in parts[s]], np.int64)
        for s in ("train", "val", "test")
    }
