"""Unsupervised nucleus masks: metrics, both methods on drawn and simulated images, a table of
real-data failure modes rebuilt on simulated scenes (padding, stain shifts, textured nuclei),
shipped real images (skimage's ihc.png, the stardist micrograph), quality flags, the folder
runner (cache, evaluation, failures) and the generator-facing MasksConfig / dataset_masks.

Floors were measured on these same inputs (numbers in the comments) and sit a little under them;
the method itself was tuned on real dev folders (benchmarks/real_data.py), not on these."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re

import numpy as np
import pytest
from skimage.draw import disk

from cytoray.errors import ConfigError, DataError
from cytoray.masks import (
    MaskParams,
    MasksConfig,
    dataset_masks,
    format_summary,
    nucleus_mask,
    nucleus_mask_report,
    run_masks,
    stardist_reference,
)
from cytoray.masks.stain import otsu_haematoxylin
from cytoray.metrics.segmentation import dice, iou

# ----------------------------------------------------------------------------- helpers

NUCLEUS_RGB = (85, 45, 135)  # haematoxylin purple-blue
RBC_RGB = (225, 105, 120)  # eosinophilic red cell: high local contrast, wrong colour
BACKGROUND_RGB = (236, 230, 242)


def drawn_image(size: int = 96, seed: int = 0, rbc: bool = False, bright: bool = False):
    """Pale field with dark purple disks (and optionally red disks); returns (rgb, nucleus truth).

    `bright` gives the fluorescence look instead: bright gray disks on a dark field.
    """
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float64)
    img[:] = (20, 20, 20) if bright else BACKGROUND_RGB
    truth = np.zeros((size, size), bool)
    centres = [(r, c) for r in range(14, size - 10, 24) for c in range(14, size - 10, 24)]
    for i, (r, c) in enumerate(centres):
        rr, cc = disk(
            (r + rng.integers(-3, 4), c + rng.integers(-3, 4)), rng.uniform(5, 8), shape=truth.shape
        )
        if rbc and i % 2:
            img[rr, cc] = RBC_RGB
        else:
            img[rr, cc] = (200, 200, 200) if bright else NUCLEUS_RGB
            truth[rr, cc] = True
    img += rng.normal(0, 4, img.shape)  # camera noise so no step sees perfectly flat regions
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), truth


# ----------------------------------------------------------------------------- metrics


def test_dice_iou_known_cases():
    a = np.array([[1, 1, 0, 0]])
    b = np.array([[0, 1, 1, 0]])
    assert dice(a, b) == pytest.approx(0.5)
    assert iou(a, b) == pytest.approx(1 / 3)
    assert dice(a, a) == iou(a, a) == 1.0
    assert dice(a, 1 - a) == iou(a, 1 - a) == 0.0
    empty = np.zeros((3, 3), bool)
    assert dice(empty, empty) == iou(empty, empty) == 1.0  # nothing to find, nothing found
    assert dice(empty, np.eye(3)) == iou(np.eye(3), empty) == 0.0
    assert (
        dice(np.array([[0, 255]], np.uint8), np.array([[False, True]])) == 1.0
    )  # nonzero = foreground
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


# ----------------------------------------------------------------------------- pipeline


def test_recovers_drawn_disks():
    img, truth = drawn_image()
    pred = nucleus_mask(img)
    assert pred.dtype == bool and pred.shape == truth.shape
    assert dice(pred, truth) > 0.9


def test_gmm_rejects_red_cells():
    img, truth = drawn_image(rbc=True, seed=1)
    pred = nucleus_mask(img)
    red = np.all(np.abs(img.astype(int) - RBC_RGB) < 25, axis=-1)
    assert red.sum() > 200  # the distractors are really there
    assert (pred & red).sum() / red.sum() < 0.05
    assert dice(pred, truth) > 0.9


def test_polarity_bright_auto_and_gray_input():
    img, truth = drawn_image(bright=True, seed=2)
    assert dice(nucleus_mask(img), truth) > 0.9  # auto: dark field → bright nuclei
    assert dice(nucleus_mask(img[..., 0]), truth) > 0.9  # HxW gray in
    # Forcing the wrong polarity must not still find the nuclei (the setting is honoured).
    assert dice(nucleus_mask(img, MaskParams(polarity="dark")), truth) < 0.5


def test_deterministic_and_input_checks():
    img, _ = drawn_image(seed=3)
    assert np.array_equal(nucleus_mask(img), nucleus_mask(img.copy()))
    assert not nucleus_mask(np.full((32, 32, 3), 200, np.uint8)).any()  # blank field, no nuclei
    with pytest.raises(ValueError, match="uint8"):
        nucleus_mask(img.astype(np.float32))
    with pytest.raises(ConfigError, match="polarity"):
        nucleus_mask(img, MaskParams(polarity="sideways"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"masks.method='otsu'.*stain, syncgan"):
        nucleus_mask(img, method="otsu")
    with pytest.raises(ConfigError, match=r"masks.keep_level=1.5"):
        nucleus_mask(img, MaskParams(keep_level=1.5))


def test_quality_flags_name_the_problem():
    from cytoray.data.background import detect_bands
    from cytoray.masks.quality import quality_flags

    img, truth = drawn_image(seed=4)
    params, whole = MaskParams(), np.ones(truth.shape, bool)

    def flags(rgb, mask):
        bands = detect_bands(rgb)
        return {
            f["flag"]: f["reason"] for f in quality_flags(rgb, mask, bands.content(), bands, params)
        }

    assert flags(img, truth) == {}
    assert "the mask marks background" in flags(img, ~truth)["inverted"]
    assert "no nucleus found" in flags(img, np.zeros_like(truth))["empty"]
    assert "covers" in flags(img, whole) and "masks.max_cover=0.6" in flags(img, whole)["covers"]
    padded = img.copy()
    padded[:, :12] = (90, 80, 120)  # a purple band on the left, as Herlev pads
    assert (
        "left 12 px"
        in flags(padded, truth | (np.arange(truth.shape[1]) < 14)[None, :])["touches_padding"]
    )


@pytest.fixture(scope="module")
def sims64():
    from cytoray.data.simulate import simulate

    return {kind: simulate(kind, n=8, size=64, seed=0) for kind in ("cytology", "histology")}


# Measured on these images (seed 0, 8 per kind at 64 px): stain cytology 0.833, histology 0.914;
# syncgan 0.930 / 0.956. The simulator now pads 30% of images and draws Giemsa-like blue
# cytoplasm that is haematoxylin-like in colour, which costs the stain method on cytology.
@pytest.mark.parametrize(
    "kind,method,floor",
    [
        ("cytology", "stain", 0.80),
        ("histology", "stain", 0.88),
        ("cytology", "syncgan", 0.90),
        ("histology", "syncgan", 0.93),
    ],
)
def test_simulator_dice_floor(sims64, kind, method, floor):
    sim = sims64[kind]
    scores = [dice(nucleus_mask(im, method=method), m) for im, m in zip(sim.images, sim.masks)]
    assert np.mean(scores) > floor, (
        f"{kind}/{method}: mean Dice {np.mean(scores):.3f} per image {np.round(scores, 2)}"
    )


# ----------------------------------------------------------------------------- failure modes of real data

HUE_SHIFT = np.array(
    [[0.85, 0.10, 0.05], [0.10, 0.85, 0.10], [0.05, 0.05, 0.85]]
)  # OD mixing: every stain's hue moves


def perturb(rgb, mask, pad=None, strength=1.0, hue=False, tint=(1.0, 1.0, 1.0)):
    """Real-folder trouble on a clean scene: stain strength/hue (in optical density), a tinted
    illumination, and flat bands (18% of the side) on top and bottom in colour `pad`."""
    od = -np.log((rgb.astype(np.float64) + 1) / 256)
    if hue:
        od = od @ HUE_SHIFT
    out = (
        np.clip(np.exp(-od * strength) * np.asarray(tint) * 256 - 1, 0, 255)
        .round()
        .astype(np.uint8)
    )
    mask = mask.astype(bool).copy()
    if pad is not None:
        w = int(0.18 * out.shape[0])
        out[:w], out[-w:], mask[:w], mask[-w:] = pad, pad, False, False
    return out, mask


@pytest.fixture(scope="module")
def scenes():
    """Clean scenes at 128 px: one large Pap-like cell at high grade (coarse chromatin, the
    textured nuclei real smears have) and at low grade, and H&E-like tissue."""
    from cytoray.data.acquisition import single_cell
    from cytoray.data.nuclei import od_to_rgb
    from cytoray.data.simulate import simulate

    out = {}
    for name, grade in (("cell_hi", 0.9), ("cell_lo", 0.15)):
        od, m = single_cell(
            np.random.default_rng([3, 1]), np.random.default_rng([3, 2]), 128, grade
        )
        out[name] = (od_to_rgb(od), m)
    sim = simulate("histology", n=6, size=128, seed=2)
    i = next(k for k, sc in enumerate(sim.scenes) if sc == "tissue" and sim.labels[k] == 1)
    out["tissue"] = (sim.images[i], sim.masks[i])
    return out


# (scene, perturbation, stain-method Dice floor). Measured stain / syncgan / Otsu-on-H Dice:
# cell_hi 0.99/0.83/0.99; cell_hi dark pad 0.99/0.83/0.36; cell_hi faint 0.99/0.88/0.99;
# cell_hi hue+tint 0.98/0.85/0.99; cell_lo grey pad 1.00/0.98/0.99; tissue pad 0.78/0.95/0.84;
# tissue strong 0.92/0.95/0.90 (means over 3 seeds in development; this table uses one).
FAILURE_MODES = [
    ("cell_hi", {}, 0.95),
    ("cell_hi", {"pad": (70, 60, 95)}, 0.95),
    ("cell_hi", {"strength": 0.6}, 0.95),
    ("cell_hi", {"hue": True, "tint": (0.97, 0.87, 0.92)}, 0.93),
    ("cell_lo", {"pad": (180, 178, 185)}, 0.95),
    ("tissue", {"pad": (150, 140, 160)}, 0.70),
    ("tissue", {"strength": 1.4}, 0.75),
]


@pytest.mark.parametrize(
    "scene,change,floor",
    FAILURE_MODES,
    ids=[f"{s}-{'+'.join(c) or 'clean'}" for s, c, _ in FAILURE_MODES],
)
def test_failure_modes_table(scenes, scene, change, floor):
    from cytoray.data.background import detect_bands, touches_padding

    rgb, truth = perturb(*scenes[scene], **change)
    mask, info = nucleus_mask_report(rgb)
    d = dice(mask, truth)
    assert d > floor, f"{scene} {change}: Dice {d:.3f}"
    assert [
        f["flag"] for f in info["flags"]
    ] == []  # never inverted, empty, too large or on the padding
    bands = detect_bands(rgb)
    assert bands.any() == ("pad" in change) and not touches_padding(mask, bands)
    if "pad" in change:  # the floor method marks the band whenever it is darker than the glass
        assert touches_padding(otsu_haematoxylin(rgb), bands) or change["pad"][0] > 150


def test_textured_nucleus_is_filled_not_holed(scenes):
    """Coarse chromatin (dark clumps, clear spaces): the RGB method leaves holes, the stain
    method one solid nucleus (measured Dice 0.99 vs 0.83, holes 0 vs many pixels)."""
    from scipy import ndimage

    rgb, truth = scenes["cell_hi"]
    stain, paper = nucleus_mask(rgb), nucleus_mask(rgb, method="syncgan")
    holes = lambda m: int((ndimage.binary_fill_holes(m) & ~m).sum())  # noqa: E731
    assert holes(stain) == 0 < holes(paper)
    assert dice(stain, truth) > dice(paper, truth) + 0.08


# ----------------------------------------------------------------------------- real reference


def test_stardist_reference_dice_floor():
    try:
        rgb, truth = stardist_reference()
    except DataError as e:
        pytest.skip(f"stardist data files not installed ({e})")
    assert rgb.dtype == np.uint8 and rgb.shape == (*truth.shape, 3) and 0.1 < truth.mean() < 0.3
    pred, info = nucleus_mask_report(rgb)
    # A dark field: the stain method hands it to the bright-polarity GMM (no stain to deconvolve).
    # Measured 0.898 Dice / 0.815 IoU with the default parameters.
    assert info["polarity"] == "bright" and info["flags"] == []
    assert dice(pred, truth) > 0.87
    assert iou(pred, truth) > 0.78


def test_ihc_haematoxylin_nuclei_not_dab():
    """skimage's ihc.png (shipped, offline): blue haematoxylin nuclei among brown DAB membranes.
    Measured: DAB basis chosen, Dice 0.854 against Otsu on rgb2hed's H (the right floor for
    IHC), mean H 0.036 in the mask vs 0.013 outside, mean DAB 0.064 in vs 0.055 outside (the
    RGB method: 0.108 vs 0.041, it marks the brown)."""
    from skimage import color, data

    rgb = data.immunohistochemistry()
    hed = color.rgb2hed(rgb)
    mask, info = nucleus_mask_report(rgb)
    assert info["stains"] == "h-dab" and info["flags"] == []
    assert (
        hed[..., 0][mask].mean() > 2 * hed[..., 0][~mask].mean()
    )  # not inverted: the mask is haematoxylin
    assert dice(mask, otsu_haematoxylin(rgb)) > 0.8
    assert (
        hed[..., 2][mask].mean() < 1.5 * hed[..., 2][~mask].mean()
    )  # brown membranes are left out


def test_stardist_missing_is_a_data_error(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DataError, match="pip install --no-deps stardist"):
        stardist_reference()


# ----------------------------------------------------------------------------- folder runner


@pytest.fixture
def mask_dataset(tmp_path):
    from cytoray.data.simulate import write_dataset

    return write_dataset(tmp_path / "ds", "cytology", n=4, size=64, seed=0)


def test_run_masks_writes_evaluates_and_caches(mask_dataset, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "out"
    first = run_masks(mask_dataset, out, evaluate=True)
    assert first["n"] == first["n_evaluated"] == 4 and first["cache_hits"] == 0
    assert 0.8 < first["dice"] <= 1 and 0.6 < first["iou"] <= first["dice"]
    assert "[masks] 4/4" in capsys.readouterr().err
    written = sorted(
        p.relative_to(out).as_posix() for p in out.glob("*/*.png") if p.parent.name != ".cache"
    )
    assert written == [
        "benign/benign_0000.png",
        "benign/benign_0001.png",
        "malignant/malignant_0000.png",
        "malignant/malignant_0001.png",
    ]
    assert set(np.unique(np.asarray(Image.open(out / written[0])))) <= {0, 255}
    json.dumps(first)  # JSON-able
    assert json.loads((out / "summary.json").read_text())["n"] == 4

    second = run_masks(mask_dataset, out, evaluate=True, progress=False)
    assert second["cache_hits"] == 4 and second["dice"] == first["dice"]
    assert capsys.readouterr().err == ""
    # Other parameters are another cache key: nothing stale is served.
    third = run_masks(
        mask_dataset,
        tmp_path / "out3",
        params=MaskParams(threshold_offset=0.05),
        cache_dir=out / ".cache",
        progress=False,
    )
    assert third["cache_hits"] == 0 and "dice" not in third
    # ...and so is another method, reported as such.
    paper = run_masks(
        mask_dataset,
        tmp_path / "out4",
        evaluate=True,
        cache_dir=out / ".cache",
        progress=False,
        method="syncgan",
    )
    assert (
        paper["cache_hits"] == 0
        and paper["method"] == "syncgan"
        and paper["params"]["method"] == "syncgan"
    )
    assert paper["dice"] != first["dice"]


def test_run_masks_reports_failures_per_image(mask_dataset, tmp_path):
    summary = run_masks(mask_dataset, tmp_path / "out", evaluate=True, progress=False)
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["images"]
    assert len(rows) == 4 and all(
        {"dice", "iou", "flags", "padding", "fail"} <= set(r) for r in rows
    )
    assert (
        summary["failed"] == sum(r["fail"] for r in rows)
        and summary["failed_share"] == summary["failed"] / 4
    )
    assert set(summary["flags"]) == {"empty", "inverted", "covers", "touches_padding"}
    assert summary["padded"] == sum(
        1 for r in rows if r["padding"]
    )  # the simulator pads some images
    strict = run_masks(
        mask_dataset, tmp_path / "strict", evaluate=True, progress=False, fail_dice=0.999
    )
    assert strict["failed"] == 4 and strict["failed_share"] == 1.0
    assert all(
        any(x.startswith("dice ") and x.endswith("< 0.999") for x in f["reasons"])
        for f in strict["failures"]
    )
    text = format_summary(strict)  # rows read back from summary.json
    assert (
        text.count("FAIL") >= 8
        and "failed: 4/4 (100%)" in text
        and text.count(" dice ") >= 4
        and "FAIL" in text
        and "min" in text
    )


def test_run_masks_errors(tmp_path, mask_dataset):
    with pytest.raises(DataError, match="folder not found"):
        run_masks(tmp_path / "nope", tmp_path / "out")
    no_gt = tmp_path / "no_gt"
    img, _ = drawn_image(size=32)
    from PIL import Image

    (no_gt / "benign").mkdir(parents=True)
    Image.fromarray(img).save(no_gt / "benign" / "a.png")
    assert (
        run_masks(no_gt, tmp_path / "o1", progress=False)["n"] == 1
    )  # one class is fine without --evaluate
    with pytest.raises(DataError, match="no_gt.*ground-truth"):
        run_masks(no_gt, tmp_path / "o2", evaluate=True, progress=False)
    with pytest.raises(DataError, match="inside the dataset"):
        run_masks(mask_dataset, mask_dataset / "pred", progress=False)


# ----------------------------------------------------------------------------- generator-facing config


@pytest.mark.parametrize(
    "key,value,word",
    [
        ("source", "drawn", "masks.source='drawn'"),
        ("method", "otsu", "masks.method='otsu'"),
        ("polarity", "up", "masks.polarity='up'"),
        ("max_cover", 0.0, "masks.max_cover=0.0"),
        ("on_flag", "ignore", "masks.on_flag='ignore'"),
        ("exclude_padding", "yes", "masks.exclude_padding"),
    ],
)
def test_masks_config_validate_names_the_key(key, value, word):
    cfg = MasksConfig(**{key: value})
    with pytest.raises(ConfigError, match=re.escape(word)):
        cfg.validate()


def test_dataset_masks_sources_padding_and_flags():
    from cytoray.data.background import detect_bands
    from cytoray.data.source import simulated_set

    ds = simulated_set("cytology", 8, 64, 0, padding="keep")
    padded = [i for i in range(len(ds)) if detect_bands(ds.images[i]).any()]
    assert padded, "the simulator should pad some of these images"
    masks = dataset_masks(ds, MasksConfig())
    assert masks.dtype == bool and masks.shape == ds.images.shape[:3]
    for i in padded:  # never a nucleus on (or next to) a band
        assert not (masks[i] & ~detect_bands(ds.images[i]).content()).any()
    assert np.mean([dice(m, t) for m, t in zip(masks, ds.masks)]) > 0.75
    assert np.array_equal(dataset_masks(ds, MasksConfig(source="ground_truth")), ds.masks)
    no_gt = dataclasses.replace(ds, masks=None)
    with pytest.raises(
        DataError, match="masks.source=ground_truth but not every image has a ground-truth mask"
    ):
        dataset_masks(no_gt, MasksConfig(source="ground_truth"))
    blank = dataclasses.replace(ds, images=np.full_like(ds.images, 200))  # nothing to find anywhere
    with pytest.raises(
        DataError,
        match=r"8/8 stain masks flagged, e.g. benign/benign_0000 \(empty: the image is one flat colour",
    ):
        dataset_masks(blank, MasksConfig(on_flag="error"))


def test_run_masks_records_polarity_evidence_and_decisions(mask_dataset, tmp_path):
    """Issue 24: every row says why it is brightfield (the dark-field evidence) and what the
    stain-vs-Otsu rule did; the summary counts the disagreements and the text report names them."""
    summary = run_masks(mask_dataset, tmp_path / "out", evaluate=True, progress=False)
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["images"]
    assert all(r["polarity"] == "dark" and r["dark_field"]["floor_saturation"] > 0.3 for r in rows)
    assert all(
        r["decision"]["chose"] in ("stain", "otsu") and 0 <= r["decision"]["agreement"] <= 1
        for r in rows
    )
    assert summary["decisions"]["disagreed"] == sum(r["decision"]["rule"] != "agree" for r in rows)
    assert summary["decisions"]["chose_otsu"] == sum(r["decision"]["chose"] == "otsu" for r in rows)
    assert "stain vs Otsu disagreed on" in format_summary(summary)


def test_warped_label_maps_keep_their_labels_and_areas_but_move():
    """masks/warp.py (SynCGAN's `prior: bank`): a warped map holds the labels it had, in about the
    same shares (scale ±10%: area ±21%), outlines that moved, and a new map per draw; pack/unpack
    round-trips the maps a bundle stores."""
    from cytoray.masks.warp import pack_maps, unpack_maps, warp_label_maps

    yy, xx = np.mgrid[0:48, 0:48]
    r = np.hypot(yy - 20, xx - 26)
    cell = np.where(r < 8, 2, np.where(r < 18, 1, 0)).astype(
        np.uint8
    )  # nucleus in a cytoplasm on glass, off centre
    maps = np.stack([cell, cell])
    out = warp_label_maps(maps, np.random.default_rng(0))
    assert out.shape == maps.shape and out.dtype == np.uint8 and set(np.unique(out)) == {0, 1, 2}
    for k in (1, 2):
        assert 0.75 < (out == k).mean(axis=(1, 2)).min() / (cell == k).mean() < 1.3
    assert not np.array_equal(out[0], cell) and not np.array_equal(out[0], out[1])
    again = warp_label_maps(maps, np.random.default_rng(0))
    assert np.array_equal(out, again)
    masks = warp_label_maps(maps == 2, np.random.default_rng(1))
    assert masks.dtype == bool and 0.75 < masks.mean() / (cell == 2).mean() < 1.3
    for a in (out, masks):
        assert (
            np.array_equal(unpack_maps(pack_maps(a)), a)
            and unpack_maps(pack_maps(a)).dtype == a.dtype
        )
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        warp_label_maps(cell, np.random.default_rng(0))
