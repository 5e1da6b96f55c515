"""Drawing primitives for procedural cell images: random polygons, nuclei, cytoplasm, red cells.

Everything is drawn onto an *optical-density* canvas, float32 [H, W, 3], as a brightfield
microscope sees it: a stain absorbs light, so a layer adds `density * od(color)` and the image
is `exp(-OD)`. That makes drawing order irrelevant and makes overlaps darker, as overlapping
nuclei are in a real smear. `od_to_rgb` turns the canvas into uint8 RGB.

Coordinates are pixels, (x, y) = (column, row), with pixel centres at integers. Callers that
think in relative units (0..1 of the image width) convert with `x_px = u * size - 0.5`, so a
scene looks the same at any resolution.

`random_polygon` follows the construction used to build initial images in unsupervised
histopathology synthesis (Hou et al.): angle steps jittered by `irregularity`, radii jittered
by `spikiness`. A refiner-GAN variant can call `random_polygon` + `draw_nucleus` directly.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage
from skimage.draw import polygon as _raster_polygon

Color = tuple[float, float, float] | np.ndarray

# ----------------------------------------------------------------------------- stain model


def rgb_to_od(color: Color) -> np.ndarray:
    """Optical density of an RGB transmittance in (0, 1] (the colour at unit density on white)."""
    return -np.log(np.clip(np.asarray(color, dtype=np.float32), 1e-3, 1.0))


def od_to_rgb(od: np.ndarray, illumination: Color = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Optical-density canvas [H, W, 3] -> uint8 RGB (Beer-Lambert, then 8-bit rounding)."""
    rgb = np.exp(-od) * np.asarray(illumination, dtype=np.float32)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def smooth_field(grid: np.ndarray, size: int) -> np.ndarray:
    """Upsample a coarse random grid [g, g] to [size, size], zero mean and unit std.

    The kernel lives in relative units (Gaussian, width ~ one grid cell), so the same grid
    gives the same field at 64 px and at 256 px: backgrounds do not change with resolution.
    """
    g = grid.shape[0]
    centres = (np.arange(g) + 0.5) / g
    pix = (np.arange(size) + 0.5) / size
    w = np.exp(-0.5 * ((pix[:, None] - centres[None, :]) / (0.7 / g)) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    f = (w @ grid @ w.T).astype(np.float32)
    return (f - f.mean()) / (f.std() + 1e-6)


# ----------------------------------------------------------------------------- geometry


def random_polygon(
    rng: np.random.Generator,
    center: tuple[float, float] | np.ndarray,
    radius: float,
    irregularity: float,
    spikiness: float,
    n_vertices: int,
) -> np.ndarray:
    """Random star-shaped polygon around `center` -> (n_vertices, 2) float array of (x, y).

    irregularity in [0, 1]: how much the angle steps vary around 2*pi/n (0 = evenly spaced).
    spikiness in [0, 1]: std of the vertex radii as a fraction of `radius` (0 = a circle).
    Radii are clipped to [0.2, 2] * radius so a nucleus never collapses to a sliver.
    """
    n = int(n_vertices)
    if n < 3:
        raise ValueError(f"random_polygon: n_vertices must be >= 3, got {n_vertices}")
    irr = min(max(float(irregularity), 0.0), 1.0) * 2 * np.pi / n
    spike = min(max(float(spikiness), 0.0), 1.0) * radius
    steps = rng.uniform(2 * np.pi / n - irr, 2 * np.pi / n + irr, size=n)
    steps *= 2 * np.pi / steps.sum()  # the steps must close the loop exactly
    angles = rng.uniform(0, 2 * np.pi) + np.cumsum(steps)
    radii = np.clip(rng.normal(radius, spike, size=n), 0.2 * radius, 2.0 * radius)
    cx, cy = float(center[0]), float(center[1])
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def smooth_polygon(polygon: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Chaikin corner cutting: rounds a jagged polygon into a smooth contour of the same shape.

    Raw random polygons are star-like; real nuclear contours are irregular (notches, bulges)
    but not spiky, so nuclei are smoothed after `random_polygon`. Corner cutting is linear,
    so it is one cached (n * 2**iterations, n) matrix product.
    """
    p = np.asarray(polygon, dtype=float)
    return _chaikin(len(p), int(iterations)) @ p


@functools.lru_cache(maxsize=64)
def _chaikin(n: int, iterations: int) -> np.ndarray:
    m = np.eye(n)
    for _ in range(iterations):
        q = np.roll(m, -1, axis=0)
        m = np.stack([0.75 * m + 0.25 * q, 0.25 * m + 0.75 * q], axis=1).reshape(-1, m.shape[1])
    m.setflags(write=False)
    return m


def stretch(
    polygon: np.ndarray, center: tuple[float, float] | np.ndarray, ratio: float, angle: float
) -> np.ndarray:
    """Elongate a polygon along `angle` by `ratio` (long/short axis), keeping its area."""
    c = np.asarray(center, dtype=float)
    ca, sa = np.cos(angle), np.sin(angle)
    s = np.sqrt(max(ratio, 1e-3))
    # R diag(s, 1/s) R^T acting on row vectors (symmetric, so no transpose needed)
    a, b, d = s * ca * ca + sa * sa / s, (s - 1 / s) * ca * sa, s * sa * sa + ca * ca / s
    return c + (polygon - c) @ np.array([[a, b], [b, d]])


def scale_polygon(
    polygon: np.ndarray, center: tuple[float, float] | np.ndarray, factor: float
) -> np.ndarray:
    c = np.asarray(center, dtype=float)
    return c + (polygon - c) * factor


def points_inside(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test (vectorised); geometry-only, independent of pixels."""
    x, y = points[:, 0][:, None], points[:, 1][:, None]
    x0, y0 = polygon[:, 0][None, :], polygon[:, 1][None, :]
    nxt = np.concatenate([polygon[1:], polygon[:1]])
    x1, y1 = nxt[:, 0][None, :], nxt[:, 1][None, :]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (crosses & (x < xint)).sum(axis=1) % 2 == 1


def resample_contour(
    polygon: np.ndarray, spacing: float, offset: float
) -> tuple[np.ndarray, np.ndarray]:
    """Points every `spacing` along a closed polygon (starting at `offset`) and unit tangents."""
    closed = np.vstack([polygon, polygon[:1]])
    seg = np.diff(closed, axis=0)
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    total = float(seglen.sum())
    if total <= 0 or spacing <= 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    k = max(1, int(total // spacing))
    s = (offset + np.arange(k) * total / k) % total
    cum = np.concatenate([[0.0], np.cumsum(seglen)])
    i = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg) - 1)
    t = ((s - cum[i]) / np.maximum(seglen[i], 1e-9))[:, None]
    tangents = seg[i] / np.maximum(seglen[i], 1e-9)[:, None]
    return closed[i] + t * seg[i], tangents


# ----------------------------------------------------------------------------- rasterising


def _crop(
    polygon: np.ndarray, shape: tuple[int, int], margin: int
) -> tuple[int, int, int, int] | None:
    h, w = shape
    (xa, ya), (xb, yb) = polygon.min(axis=0), polygon.max(axis=0)
    x0, y0 = max(int(np.floor(xa)) - margin, 0), max(int(np.floor(ya)) - margin, 0)
    x1, y1 = min(int(np.ceil(xb)) + margin + 1, w), min(int(np.ceil(yb)) + margin + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return y0, y1, x0, x1


def polygon_alpha(
    polygon: np.ndarray, shape: tuple[int, int], softness: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Hard raster and soft alpha (Gaussian-blurred raster) of a polygon, on its bounding crop.

    Returns (crop slices, hard bool mask, soft float alpha) or None when fully off-canvas.
    A polygon smaller than a pixel still marks the pixel under its centroid, so every drawn
    nucleus shows up in the ground-truth mask.
    """
    margin = int(np.ceil(3 * softness)) + 1
    box = _crop(polygon, shape, margin)
    if box is None:
        return None
    y0, y1, x0, x1 = box
    hard = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    rr, cc = _raster_polygon(polygon[:, 1] - y0, polygon[:, 0] - x0, shape=hard.shape)
    hard[rr, cc] = True
    if not hard.any():
        cy, cx = int(round(polygon[:, 1].mean())) - y0, int(round(polygon[:, 0].mean())) - x0
        if not (0 <= cy < hard.shape[0] and 0 <= cx < hard.shape[1]):
            return None
        hard[cy, cx] = True
    alpha = blur(hard.astype(np.float32), softness) if softness > 0 else hard.astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), hard, alpha


def _texture(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Roughly zero-mean, unit-std noise with blobs about `scale_px` wide (chromatin clumps).

    The std of Gaussian-filtered white noise is 1 / (2 sqrt(pi) sigma) in 2-D, so it is
    normalised analytically: no per-call reductions in this hot path (one call per nucleus).
    """
    sigma = max(scale_px, 0.4)
    return blur(rng.standard_normal(shape).astype(np.float32), sigma) * min(
        2 * np.sqrt(np.pi) * sigma, 4.0
    )


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a small 2-D array (zero outside) as two matrix products.

    Crops here are tens of pixels, where scipy's per-call overhead dominates; a banded
    Toeplitz matrix product is several times faster and gives the same result. Sigma is
    rounded to 1/40 px so kernels can be cached across nuclei.
    """
    k = _kernel(max(x.shape), round(float(sigma) * 40) / 40)
    return k[: x.shape[0], : x.shape[0]] @ x @ k[: x.shape[1], : x.shape[1]]


@functools.lru_cache(maxsize=512)
def _kernel(n: int, sigma: float) -> np.ndarray:
    d = np.arange(n, dtype=np.float32)
    r = np.arange(-int(4 * sigma) - 1, int(4 * sigma) + 2, dtype=np.float32)
    k = (
        np.exp(-0.5 * ((d[:, None] - d[None, :]) / sigma) ** 2)
        / np.exp(-0.5 * (r / sigma) ** 2).sum()
    )
    k.setflags(write=False)
    return k


# ----------------------------------------------------------------------------- drawing


def draw_nucleus(
    canvas: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    polygon: np.ndarray,
    color: Color,
    chromatin: float,
    *,
    density: float = 1.0,
    nucleolus: float = 0.0,
    rim: float = 0.35,
) -> None:
    """Draw one textured nucleus onto an OD canvas and mark it in the ground-truth mask.

    color: RGB transmittance of the nuclear stain at unit density (haematoxylin purple-blue).
    chromatin in [0, 1]: coarseness of the chromatin; 0 = fine and even (benign), 1 = clumped
        with clear spaces (malignant). Clump size scales with the nucleus, so texture looks
        the same at any resolution.
    density: overall stain uptake (> 1 = hyperchromasia).
    nucleolus: extra density of one nucleolus (0 = none); visible only at larger sizes.
    rim: extra density along the nuclear membrane (a crisp contour, as in Pap stains).
    `rng` drives only texture, never geometry.
    """
    h, w = mask.shape
    r_px = float(np.sqrt(max(_area(polygon), 1e-6) / np.pi))
    got = polygon_alpha(polygon, (h, w), softness=max(0.45, 0.07 * r_px))
    if got is None:
        return
    sl, hard, alpha = got
    chromatin = min(max(float(chromatin), 0.0), 1.0)
    # 1. chromatin: coarse clumps (~1/4 of the radius) whose contrast grows with `chromatin`,
    #    on a faint fine granularity that every nucleus has.
    fine = rng.standard_normal(hard.shape).astype(np.float32)
    tex = 1.0 + 0.75 * chromatin * _texture(rng, hard.shape, 0.22 * r_px) + 0.08 * fine
    tex = np.clip(tex, 0.2, 2.5)
    # 2. membrane: density rises just inside the contour (raster minus its blur is positive
    #    only there), reusing the alpha blur.
    if rim > 0:
        tex = tex + 2.0 * rim * np.clip(hard - alpha, 0.0, 0.5)
    dens = alpha * tex * density
    # 3. nucleolus: a small dense spot off-centre.
    if nucleolus > 0:
        ys, xs = np.nonzero(hard)
        k = int(rng.integers(len(ys)))
        yy = np.arange(hard.shape[0], dtype=np.float32)[:, None] - ys[k]
        xx = np.arange(hard.shape[1], dtype=np.float32)[None, :] - xs[k]
        rn = max(0.5, 0.13 * r_px)
        dens = dens + nucleolus * alpha * np.exp(-(yy * yy + xx * xx) / (2 * rn * rn))
    canvas[sl] += dens[..., None] * rgb_to_od(color)
    mask[sl] |= hard.astype(mask.dtype)


def draw_blob(
    canvas: np.ndarray,
    rng: np.random.Generator,
    polygon: np.ndarray,
    color: Color,
    density: float,
    softness: float,
    texture: float = 0.15,
) -> None:
    """Soft stained region (cytoplasm, debris) on the OD canvas; never part of the nucleus mask.

    softness: edge blur in pixels (cytoplasm edges are fuzzier than nuclear membranes).
    texture: contrast of a granular texture (0 = flat).
    """
    got = polygon_alpha(polygon, canvas.shape[:2], softness=softness)
    if got is None:
        return
    sl, hard, alpha = got
    r_px = float(np.sqrt(max(_area(polygon), 1e-6) / np.pi))
    tex = 1.0 + texture * _texture(rng, alpha.shape, 0.3 * r_px) if texture > 0 else 1.0
    canvas[sl] += (alpha * density * tex)[..., None] * rgb_to_od(color)


def draw_rbc(
    canvas: np.ndarray,
    center: tuple[float, float],
    radius: float,
    color: Color,
    density: float,
    ratio: float = 1.0,
    angle: float = 0.0,
) -> None:
    """Red blood cell: an anucleate disc with a pale centre (biconcave), slightly elliptical."""
    h, w = canvas.shape[:2]
    cx, cy = center
    m = radius * max(ratio, 1.0) + 2
    y0, y1 = max(int(cy - m), 0), min(int(cy + m) + 2, h)
    x0, x1 = max(int(cx - m), 0), min(int(cx + m) + 2, w)
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    ca, sa = np.cos(angle), np.sin(angle)
    a = (dx * ca + dy * sa) / np.sqrt(ratio)
    b = (-dx * sa + dy * ca) * np.sqrt(ratio)
    d = np.sqrt(a * a + b * b) / max(radius, 1e-3)  # 1 at the rim
    edge = np.clip((1.0 - d) * radius / 0.7 + 0.5, 0.0, 1.0)  # ~1 px anti-aliased edge
    profile = 1.0 - 0.6 * np.exp(-((d / 0.5) ** 2))  # central pallor
    canvas[y0:y1, x0:x1] += (edge * profile * density)[..., None] * rgb_to_od(color)


# ----------------------------------------------------------------------------- textures


def collagen(
    rng: np.random.Generator, trng: np.random.Generator, size: int, theta: float
) -> np.ndarray:
    """Stroma density [size, size] in [0.25, 1.2]: noise blurred along one axis, turned to
    `theta` (radians) and warped by a smooth field, like wavy collagen bundles.

    `rng` draws the geometry (waviness), `trng` the pixel noise.

    Bundle width and length are fractions of the image, so the look holds at any size; the
    gaps between bundles (clefts) become near-white, as in fixed breast stroma.
    """
    big = int(np.ceil(size * 1.5)) + 4
    n = ndimage.gaussian_filter(
        trng.standard_normal((big, big)).astype(np.float32),
        (max(0.6, 0.008 * size), max(2.0, 0.08 * size)),
    )
    n = (n - n.mean()) / (n.std() + 1e-6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    warp = smooth_field(rng.standard_normal((4, 4)), size) * 0.05 * size  # waviness
    ca, sa = np.cos(theta), np.sin(theta)
    u = xx * ca + yy * sa
    v = -xx * sa + yy * ca + warp
    f = ndimage.map_coordinates(n, [v + (big - 1) / 2, u + (big - 1) / 2], order=1, mode="reflect")
    return (0.25 + 0.95 / (1 + np.exp(-2.2 * (f + 0.6)))).astype(np.float32)


def _area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(x[:-1] @ y[1:] - y[:-1] @ x[1:] + x[-1] * y[0] - y[-1] * x[0]))
