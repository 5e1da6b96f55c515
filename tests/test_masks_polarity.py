"""Polarity and the dark-field decision on evidence a dense brightfield tile cannot fake, and the
quality flag that catches an inverted mask (issue 24).

A crowded H&E tile (nuclei nearly everywhere) is mostly dark and its darkest pixels are almost
black, which is all the old decision looked at: it took such a tile for fluorescence and marked
the pale gaps as nuclei, and the quality check, judging in the same (wrong) polarity, called the
mask fine. Built here from the ihc.png that scikit-image ships (no download, no user data)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import color, data
from skimage.draw import disk

from cytoray.masks import MaskParams, nucleus_mask, nucleus_mask_report
from cytoray.masks.darkfield import dark_field, dark_field_evidence, looks_dark_field
from cytoray.masks.quality import quality_flags
from cytoray.masks.unsupervised import resolve_polarity
from cytoray.metrics.segmentation import dice


def _everywhere(rgb: np.ndarray) -> np.ndarray:
    return np.ones(rgb.shape[:2], dtype=bool)


def dense_he_tile(density: float = 7.0) -> np.ndarray:
    """A crowded H&E tile from skimage's shipped ihc.png: the 64 windows (24 px) of it richest in
    haematoxylin, tiled edge to edge (nuclei nearly everywhere), and rendered as H&E by
    Beer-Lambert: haematoxylin density (rgb2hed's H, scaled so its 99th percentile is `density`)
    along Ruifrok & Johnston's H vector, plus a flat eosin counterstain. At the default the tile
    is mostly dark (median gray < 0.35) with a near-black darkest tenth: what the old decision
    took for fluorescence."""
    rgb = data.immunohistochemistry()
    hed = color.rgb2hed(rgb)
    h = np.clip(hed[..., 0], 0, None)
    score = h - hed[..., 2]
    cell = 24
    rows, cols = rgb.shape[0] // cell, rgb.shape[1] // cell
    win = score[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell).mean(axis=(1, 3))
    best = np.argsort(win.ravel())[::-1][:64]
    crops = [
        h[(i // cols) * cell : (i // cols + 1) * cell, (i % cols) * cell : (i % cols + 1) * cell]
        for i in best
    ]
    tile = np.concatenate(
        [np.concatenate(crops[r * 8 : (r + 1) * 8], axis=1) for r in range(8)], axis=0
    )
    tile = tile / np.percentile(tile, 99) * density
    od = tile[..., None] * np.array([0.65, 0.70, 0.29]) + 0.25 * np.array([0.07, 0.99, 0.11])
    return np.clip(np.exp(-od) * 255.0, 0, 255).round().astype(np.uint8)


def fluorescence_like(
    size: int = 128, seed: int = 0, tint=(1.0, 1.0, 1.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Bright blobs on a black, noisy field (tint (0.2, 0.4, 1.0): a blue DAPI pseudo-colour)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size), 12.0)
    truth = np.zeros((size, size), bool)
    for r in range(16, size - 10, 30):
        for c in range(16, size - 10, 30):
            rr, cc = disk(
                (r + rng.integers(-4, 5), c + rng.integers(-4, 5)),
                rng.uniform(6, 10),
                shape=truth.shape,
            )
            img[rr, cc] = rng.uniform(150, 230)
            truth[rr, cc] = True
    img = img[..., None] * np.asarray(tint) + rng.normal(0, 4, (size, size, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), truth


@pytest.fixture(scope="module")
def dense_tile() -> np.ndarray:
    return dense_he_tile()


def test_dense_brightfield_tile_is_never_dark_field(dense_tile):
    """The tile meets the old rule (median gray < 0.35 and darkest tenth < 0.1: 'dark field'),
    but its darkest pixels are purple and its bright gaps connected: brightfield, by both
    methods, at several stain strengths, and its mask is the haematoxylin-dense part."""
    params = MaskParams()
    for density in (5.0, 7.0, 9.0):
        tile = dense_he_tile(density)
        ev = dark_field_evidence(tile, _everywhere(tile), params)
        if density >= 7.0:  # what fooled the old decision is really there
            assert (
                ev["median_gray"] < params.auto_dark_background
                and ev["p10_gray"] < params.dark_floor
            )
        assert not looks_dark_field(ev, params), ev
        assert not dark_field(tile, _everywhere(tile), params)
        assert (
            resolve_polarity(tile, params) == "dark"
        )  # the SynCGAN-paper method decides the same way
    mask, info = nucleus_mask_report(dense_tile)
    assert info["polarity"] == "dark" and info["flags"] == []
    assert set(info["dark_field"]) == {
        "median_gray",
        "p10_gray",
        "floor_saturation",
        "bright_piece_share",
    }  # reported
    h = color.rgb2hed(dense_tile)[..., 0]
    assert 0.05 < mask.mean() < 0.6 and h[mask].mean() > h[~mask].mean()


def test_inverted_mask_is_flagged_on_tissue(dense_tile):
    """An inverted mask is flagged whatever polarity made it: the check decides dark field from
    the image, and in brightfield compares rgb2hed's haematoxylin inside and outside the mask."""
    mask = nucleus_mask(dense_tile)
    content = _everywhere(dense_tile)

    def flags(m, params=MaskParams()):
        return {f["flag"]: f["reason"] for f in quality_flags(dense_tile, m, content, None, params)}

    assert "inverted" not in flags(mask)
    assert "paler in haematoxylin" in flags(~mask)["inverted"]
    # Forcing bright polarity on this brightfield tile marks the pale gaps; the report says so.
    forced, info = nucleus_mask_report(dense_tile, MaskParams(polarity="bright"))
    assert info["polarity"] == "bright" and "inverted" in [f["flag"] for f in info["flags"]]
    assert dice(forced, mask) < 0.5
    assert "inverted" in flags(
        ~mask, MaskParams(polarity="bright")
    )  # the setting does not blind the check


@pytest.mark.parametrize("tint", [(1.0, 1.0, 1.0), (0.2, 0.4, 1.0)], ids=["grey", "dapi-blue"])
def test_fluorescence_is_still_dark_field(tint):
    """Bright blobs on a black, noisy field (grey, and a blue DAPI pseudo-colour) are a dark field:
    found with bright polarity, not flagged, and flagged inverted when the mask is the background."""
    img, truth = fluorescence_like(tint=tint)
    content = _everywhere(img)
    assert (
        dark_field(img, content, MaskParams()) and resolve_polarity(img, MaskParams()) == "bright"
    )
    mask, info = nucleus_mask_report(img)
    assert info["polarity"] == "bright" and info["flags"] == []
    assert dice(mask, truth) > 0.9
    assert "inverted" in [
        f["flag"] for f in quality_flags(img, ~truth, content, None, MaskParams())
    ]


def test_stardist_micrograph_is_dark_field():
    from cytoray.errors import DataError
    from cytoray.masks import stardist_reference

    try:
        rgb, _ = stardist_reference()
    except DataError as e:
        pytest.skip(f"stardist data files not installed ({e})")
    assert dark_field(rgb, _everywhere(rgb), MaskParams())


# ----------------------------------------------------------------------------- stain vs Otsu: the stated rule


def _purple_disks(size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Dark purple disks (haematoxylin-like) on a pale field, with camera noise; (rgb, truth)."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3))
    img[:] = (236, 230, 242)
    truth = np.zeros((size, size), bool)
    for r in range(14, size - 10, 24):
        for c in range(14, size - 10, 24):
            rr, cc = disk(
                (r + rng.integers(-3, 4), c + rng.integers(-3, 4)),
                rng.uniform(5, 8),
                shape=truth.shape,
            )
            img[rr, cc] = (85, 45, 135)
            truth[rr, cc] = True
    img += rng.normal(0, 4, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), truth


def test_decide_takes_otsu_when_the_stain_mask_misses_nuclei():
    """A stain mask holding a quarter of the nuclei disagrees with Otsu (Dice ~0.4); what Otsu
    adds is as dense as the common core, what it drops is nothing: Otsu's mask is taken."""
    from cytoray.masks.stain import decide

    img, truth = _purple_disks()
    content = _everywhere(img)
    lab = ndimage.label(truth)[0]
    partial = truth & (lab % 4 == 1)
    mask, decision = decide(img, content, partial, MaskParams())
    assert (
        decision["agreement"] < 0.5 and decision["rule"] == "nearer" and decision["chose"] == "otsu"
    )
    assert dice(mask, truth) > 0.9 > dice(partial, truth)
    h = decision["haematoxylin"]
    assert abs(h["otsu_adds"] - h["core"]) < abs(h["otsu_adds"] - h["background"])
    empty, why = decide(img, content, np.zeros_like(truth), MaskParams())
    assert why["rule"] == "unusable" and why["chose"] == "otsu" and dice(empty, truth) > 0.9
    same, agreed = decide(img, content, truth, MaskParams())
    assert agreed["rule"] == "agree" and same is truth  # agreement: the stain mask, untouched


def test_decide_keeps_the_nucleus_when_otsu_takes_the_pale_rest():
    """The stain mask is the nuclei and the 'Otsu' alternative adds pale cytoplasm (a Pap cell):
    the added pixels are nearer the background than the nuclei, so the stain mask stays."""
    from cytoray.masks import stain as stain_module

    img, truth = _purple_disks(seed=1)
    grown = ndimage.binary_dilation(truth, iterations=6)
    img[grown & ~truth] = (200, 185, 215)  # pale lilac cytoplasm around every nucleus
    content = _everywhere(img)
    original = stain_module.otsu_nuclear
    try:
        stain_module.otsu_nuclear = lambda rgb, c, p: grown  # Otsu's threshold taking whole cells
        mask, decision = stain_module.decide(img, content, truth, MaskParams())
    finally:
        stain_module.otsu_nuclear = original
    assert (
        decision["agreement"] < 0.5
        and decision["rule"] == "nearer"
        and decision["chose"] == "stain"
    )
    assert mask is truth


def test_report_records_the_decision_and_the_dark_field_evidence(dense_tile):
    _, info = nucleus_mask_report(dense_tile)
    assert info["decision"]["rule"] in ("agree", "unusable", "nearer", "no common core")
    assert 0.0 <= info["decision"]["agreement"] <= 1.0 and info["decision"]["chose"] in (
        "stain",
        "otsu",
    )
    assert info["dark_field"]["floor_saturation"] > 0.3  # the tile's darkest pixels carry stain hue
