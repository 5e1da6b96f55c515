"""Tests for the embedded simulator (cytoray.data.simulate) and its drawing primitives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cytoray.data.nuclei import draw_nucleus, od_to_rgb, random_polygon, smooth_polygon
from cytoray.data.simulate import CLASSES, SimulatedSet, class_counts, simulate, write_dataset
from cytoray.errors import CytorayError
from cytoray.io import sha256_file

KINDS = ("cytology", "histology")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sets64() -> dict[str, SimulatedSet]:
    """40 images per kind at 64 px (20 per class): enough for class-level statistics."""
    return {kind: simulate(kind, n=40, size=64, seed=0) for kind in KINDS}


def _fractions(s: SimulatedSet, cls: int) -> np.ndarray:
    m = s.masks[s.labels == cls]
    return m.reshape(len(m), -1).mean(axis=1)


def _mean_component_area(s: SimulatedSet, cls: int) -> float:
    from skimage.measure import label

    areas = []
    for m in s.masks[s.labels == cls]:
        lab = label(m)
        areas.extend(np.bincount(lab.ravel())[1:])
    return float(np.mean(areas))


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_dtypes_and_balance(kind: str) -> None:
    s = simulate(kind, n=7, size=32, seed=3)
    assert s.kind == kind and s.class_names == CLASSES == ("benign", "malignant")
    assert s.images.shape == (7, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.masks.shape == (7, 32, 32) and s.masks.dtype == np.uint8
    assert set(np.unique(s.masks)) <= {0, 1}
    assert s.labels.dtype == np.int64 and s.labels.tolist() == [
        0,
        0,
        0,
        0,
        1,
        1,
        1,
    ]  # odd n: benign +1
    assert s.names[0] == "benign_0000" and s.names[4] == "malignant_0000" and len(s.names) == 7
    assert class_counts(150) == {"benign": 75, "malignant": 75}


@pytest.mark.parametrize("size", [64, 128])
def test_histology_runs_at_sizes(size: int) -> None:
    s = simulate("histology", n=2, size=size, seed=1)
    assert s.images.shape == (2, size, size, 3)
    assert all(m.sum() > 0 for m in s.masks)


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_arrays_other_seed_differs(kind: str) -> None:
    a, b = simulate(kind, n=4, size=32, seed=5), simulate(kind, n=4, size=32, seed=5)
    c = simulate(kind, n=4, size=32, seed=6)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)


def test_image_depends_only_on_seed_kind_class_index() -> None:
    # Growing the dataset must not change the images already in it.
    small, big = (
        simulate("cytology", n=4, size=32, seed=2),
        simulate("cytology", n=10, size=32, seed=2),
    )
    for i, name in enumerate(small.names):
        j = big.names.index(name)
        assert np.array_equal(small.images[i], big.images[j]), name
    # ...and the kinds use different streams.
    assert not np.array_equal(
        small.images[0], simulate("histology", n=4, size=32, seed=2).images[0]
    )


def test_scene_is_resolution_independent() -> None:
    # Geometry lives in relative units: the same image at 64 and 128 px has the same nuclei.
    lo, hi = simulate("cytology", n=6, size=64, seed=0), simulate("cytology", n=6, size=128, seed=0)
    f_lo = lo.masks.reshape(6, -1).mean(1)
    f_hi = hi.masks.reshape(6, -1).mean(1)
    assert np.abs(f_lo - f_hi).max() < 0.03, (f_lo, f_hi)


# ----------------------------------------------------------------------------- content


@pytest.mark.parametrize("kind", KINDS)
def test_masks_nonempty_and_nuclei_darker(kind: str, sets64: dict[str, SimulatedSet]) -> None:
    s = sets64[kind]
    gray = s.images.astype(np.float64).mean(axis=-1)
    for img, m, name in zip(gray, s.masks, s.names):
        assert m.sum() > 0, name
        assert img[m == 1].mean() < img[m == 0].mean() - 40, name


@pytest.mark.parametrize("kind", KINDS)
def test_malignant_has_bigger_nuclei_but_classes_overlap(
    kind: str, sets64: dict[str, SimulatedSet]
) -> None:
    s = sets64[kind]
    fb, fm = _fractions(s, 0), _fractions(s, 1)
    assert fm.mean() > 1.3 * fb.mean(), (fb.mean(), fm.mean())
    assert _mean_component_area(s, 1) > 1.3 * _mean_component_area(s, 0)
    # Not trivially separable: some benign image is more nuclear than some malignant one.
    assert fb.max() > fm.min(), (fb.max(), fm.min())


def test_cytology_colours_are_stain_like(sets64: dict[str, SimulatedSet]) -> None:
    s = sets64["cytology"]
    img = s.images.astype(np.float64)
    nuc = img[s.masks == 1]
    # haematoxylin-stained nuclei are blue-violet: blue above green
    assert nuc[:, 2].mean() > nuc[:, 1].mean() + 15
    # the background is pale
    assert img[s.masks == 0].mean() > 170


# ----------------------------------------------------------------------------- real-folder failure modes


def test_failure_modes_are_in_the_default_data(sets64: dict[str, SimulatedSet]) -> None:
    """Padding bands, single large cells and stain variation show up in the default study's data."""
    from cytoray.data.background import detect_bands

    cyto = sets64["cytology"]
    padded = [i for i, sc in enumerate(cyto.scenes) if sc.endswith("+padded")]
    single = [i for i, sc in enumerate(cyto.scenes) if sc.startswith("single_cell")]
    assert 4 <= len(padded) <= 24 and 3 <= len(single) <= 20, cyto.scenes  # 30% and 25% of 40
    assert {sc.split("+")[0] for sc in sets64["histology"].scenes} == {"tissue"}
    for i in range(len(cyto.images)):
        bands = detect_bands(cyto.images[i])
        assert bands.any() == (i in padded), (cyto.names[i], bands.describe())
        assert not cyto.masks[i][bands.padding()].any()  # no nucleus on a band
    # one large cell: a single dominant nucleus, larger at high grade (N:C ratio)
    from skimage.measure import label

    big = {int(cyto.labels[i]): [] for i in single}
    for i in single:
        areas = np.bincount(label(cyto.masks[i]).ravel())[1:]
        big[int(cyto.labels[i])].append(areas.max() / cyto.masks[i].size)
    assert np.mean(big.get(1, [1.0])) > np.mean(big.get(0, [0.0]))
    # stain variation: the background (brightest tenth) differs in tint between images
    tints = [np.percentile(im.reshape(-1, 3), 90, axis=0) for im in cyto.images]
    assert np.std([t[0] - t[2] for t in tints]) > 2


def test_stain_variation_is_a_hue_and_strength_change() -> None:
    from cytoray.data.acquisition import stain_variation

    grey = np.full((4, 4, 3), 0.5, np.float32)
    out, tint = stain_variation(grey, np.random.default_rng(0))
    assert np.allclose(out[..., 0], out[..., 1]) and np.allclose(
        out[..., 1], out[..., 2]
    )  # a grey stays grey
    assert not np.allclose(out, grey) and np.all((tint >= 0.85) & (tint <= 1.0))
    col = np.zeros((4, 4, 3), np.float32)
    col[..., 2] = 1.0  # one channel only: the hue moves into the others
    moved, _ = stain_variation(col, np.random.default_rng(0))
    assert (moved[..., :2] > 0).all()


def test_simulated_set_crops_padding_like_a_folder() -> None:
    from cytoray.data.background import detect_bands
    from cytoray.data.source import simulated_set

    cropped, kept = (
        simulated_set("cytology", 20, 64, 0),
        simulated_set("cytology", 20, 64, 0, padding="keep"),
    )
    assert cropped.padding == "crop" and cropped.images.shape == kept.images.shape == (
        20,
        64,
        64,
        3,
    )
    assert any(detect_bands(im).any() for im in kept.images) and not any(
        detect_bands(im).any() for im in cropped.images
    )
    assert (
        cropped.sha256 == kept.sha256 and cropped.names == kept.names
    )  # the drawn image's hash either way
    unpadded = [i for i, im in enumerate(kept.images) if not detect_bands(im).any()]
    assert all(np.array_equal(cropped.images[i], kept.images[i]) for i in unpadded)


# ----------------------------------------------------------------------------- primitives


def test_random_polygon_parameters() -> None:
    rng = np.random.default_rng(0)
    regular = random_polygon(rng, (10.0, 20.0), 5.0, 0.0, 0.0, 8)
    assert regular.shape == (8, 2)
    r = np.hypot(regular[:, 0] - 10, regular[:, 1] - 20)
    assert np.allclose(r, 5.0)
    ang = np.sort(np.mod(np.arctan2(regular[:, 1] - 20, regular[:, 0] - 10), 2 * np.pi))
    assert np.allclose(np.diff(ang), 2 * np.pi / 8)
    spiky = random_polygon(rng, (0.0, 0.0), 5.0, 0.5, 0.4, 32)
    rs = np.hypot(spiky[:, 0], spiky[:, 1])
    assert rs.std() > 0.5 and rs.min() >= 1.0 - 1e-9 and rs.max() <= 10.0 + 1e-9
    with pytest.raises(ValueError):
        random_polygon(rng, (0, 0), 1.0, 0.1, 0.1, 2)


def test_draw_nucleus_marks_mask_and_darkens() -> None:
    rng = np.random.default_rng(1)
    canvas = np.zeros((40, 40, 3), np.float32)
    mask = np.zeros((40, 40), np.uint8)
    poly = smooth_polygon(random_polygon(rng, (20.0, 20.0), 6.0, 0.3, 0.1, 12))
    draw_nucleus(
        canvas, mask, rng, poly, (0.4, 0.3, 0.6), chromatin=0.8, density=1.4, nucleolus=1.0
    )
    area = 0.5 * abs(
        np.dot(poly[:, 0], np.roll(poly[:, 1], -1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], -1))
    )
    assert abs(int(mask.sum()) - area) < 0.25 * area
    rgb = od_to_rgb(canvas)
    assert rgb[mask == 1].mean() < 120 and rgb[0, 0].tolist() == [255, 255, 255]
    assert mask[0].sum() == 0 and mask[:, 0].sum() == 0  # stays local


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"kind": "xray"}, "kind"),
        ({"n": 1}, "n="),
        ({"size": 8}, "size"),
        ({"seed": -1}, "seed"),
        ({"n": 2.5}, "n="),
    ],
)
def test_bad_arguments_raise(kwargs: dict, word: str, tmp_path) -> None:
    with pytest.raises(CytorayError, match=word):
        simulate(**kwargs)
    with pytest.raises(CytorayError, match=word):
        write_dataset(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- writing


def test_write_dataset_layout_and_identical_bytes(tmp_path) -> None:
    a = write_dataset(tmp_path / "a", kind="cytology", n=5, size=32, seed=4)
    b = write_dataset(tmp_path / "b", kind="cytology", n=5, size=32, seed=4)
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert "benign/benign_0002.png" in files_a and "malignant/masks/malignant_0001.png" in files_a
    assert len([f for f in files_a if f.endswith(".png")]) == 10
    for rel in files_a:
        assert sha256_file(a / rel) == sha256_file(b / rel), rel
    meta = json.loads((a / "simulation.json").read_text())
    assert (
        meta["kind"] == "cytology" and meta["n"] == 5 and meta["size"] == 32 and meta["seed"] == 4
    )
    assert meta["counts"] == {"benign": 3, "malignant": 2} and "cytoray_version" in meta
    assert "nucleus_radius" in meta["generator"]["features_at_grade_0_and_1"]
    assert (
        meta["generator"]["acquisition"]["p_padding"] > 0
        and "nc_ratio" in meta["generator"]["acquisition"]["single_cell_features_at_grade_0_and_1"]
    )
    # PNGs round-trip to the simulated arrays; masks are 0/255
    sim = simulate("cytology", n=5, size=32, seed=4)
    assert np.array_equal(np.asarray(Image.open(a / "benign" / "benign_0000.png")), sim.images[0])
    m = np.asarray(Image.open(a / "benign" / "masks" / "benign_0000.png"))
    assert set(np.unique(m)) <= {0, 255} and np.array_equal(m // 255, sim.masks[0])
    c = write_dataset(tmp_path / "c", kind="cytology", n=5, size=32, seed=9)
    assert sha256_file(c / "benign" / "benign_0000.png") != sha256_file(
        a / "benign" / "benign_0000.png"
    )


def test_write_dataset_refuses_nonempty_folder(tmp_path) -> None:
    out = tmp_path / "sim"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(CytorayError, match="not empty"):
        write_dataset(out, kind="histology", n=2, size=32)
    assert (out / "keep.txt").read_text() == "user data" and not (out / "benign").exists()
    write_dataset(out, kind="histology", n=2, size=32, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "malignant" / "malignant_0000.png").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sim"]  # no temporary folders left behind
