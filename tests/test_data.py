"""Folder datasets, image conversion, splits, leakage and `cytoray validate` on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import blob_image, write_png

from cytoray.cli import main
from cytoray.data.folder import load_folder, parse_breakhis, require_folder
from cytoray.data.images import fit_square, read_rgb
from cytoray.data.splits import Manifest, check_leakage, make_manifest, repeated_manifests
from cytoray.errors import DataError

# ----------------------------------------------------------------------------- image conversion


@pytest.mark.parametrize(
    "make",
    [
        lambda: (np.arange(32 * 32, dtype=np.uint8).reshape(32, 32), "L"),
        lambda: (np.full((32, 32, 4), 128, np.uint8), "RGBA"),
        lambda: ((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16), "I;16"),
    ],
    ids=["grayscale", "rgba", "16bit"],
)
def test_read_rgb_converts_any_mode(tmp_path, make):
    arr, mode = make()
    p = write_png(tmp_path / "x.png", arr)
    from PIL import Image

    assert Image.open(p).mode.startswith(mode[:3])
    out = read_rgb(p)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_read_rgb_palette_and_tiff(tmp_path):
    from PIL import Image

    Image.fromarray(blob_image(1)).convert("P").save(tmp_path / "p.png")
    assert read_rgb(tmp_path / "p.png").shape == (32, 32, 3)
    import tifffile

    tifffile.imwrite(
        tmp_path / "t.tif", (np.random.default_rng(0).random((40, 30)) * 60000).astype(np.uint16)
    )
    out = read_rgb(tmp_path / "t.tif")
    assert out.shape == (40, 30, 3) and out.max() > 100


def test_fit_square_keeps_aspect_by_centre_crop():
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, 30:50] = 255  # a centred bar survives the crop
    out = fit_square(arr, 20)
    assert out.shape == (20, 20, 3)
    assert out[:, 10].mean() > 200 and out[:, 0].mean() < 50


# ----------------------------------------------------------------------------- bad input: one clear error each


def _err(capsys, argv) -> tuple[int, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.err + cap.out


def test_corrupt_and_truncated_images_are_named(folder_dataset, capsys):
    good = (folder_dataset / "benign" / "benign_00.png").read_bytes()
    (folder_dataset / "benign" / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder_dataset / "malignant" / "garbage.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="truncated.png"):
        read_rgb(folder_dataset / "benign" / "truncated.png")
    with pytest.raises(DataError, match="garbage.jpg: not a readable image"):
        read_rgb(folder_dataset / "malignant" / "garbage.jpg")
    code, out = _err(capsys, ["validate", str(folder_dataset), "--json"])
    rep = json.loads(out[out.index("{") :])
    assert code == 1 and not rep["usable"]
    files = {Path(p["file"]).name for p in rep["problems"]}
    assert files == {"truncated.png", "garbage.jpg"}
    with pytest.raises(DataError, match="truncated.png"):
        load_folder(folder_dataset, 32)


def test_non_image_file_is_named(folder_dataset):
    (folder_dataset / "benign" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes.txt: not an image file"):
        require_folder(folder_dataset)


def test_empty_class_folder(folder_dataset):
    (folder_dataset / "atypical").mkdir()
    with pytest.raises(DataError, match=r"atypical: class folder has no images"):
        require_folder(folder_dataset)


def test_single_class(tmp_path):
    for i in range(5):
        write_png(tmp_path / "only" / "benign" / f"{i}.png", blob_image(i))
    with pytest.raises(DataError, match="at least two class"):
        require_folder(tmp_path / "only")


def test_class_too_small_for_split(tmp_path):
    for i in range(6):
        write_png(tmp_path / "d" / "benign" / f"{i}.png", blob_image(i))
    for i in range(2):
        write_png(tmp_path / "d" / "malignant" / f"{i}.png", blob_image(50 + i))
    ds = load_folder(tmp_path / "d", 32)
    with pytest.raises(
        DataError, match="class 'malignant' has 2 images.*too few for split ratios 3:1:1"
    ):
        make_manifest(ds, [3, 1, 1], seed=0)


def test_missing_directory_cli_has_no_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "cytoray.cli", "validate", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "folder not found" in r.stdout and "Traceback" not in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cytoray.cli",
            "split",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.startswith("cytoray: error:") and "nope" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- validate, splits, leakage


def test_validate_json_counts(folder_dataset, capsys):
    code, out = _err(capsys, ["validate", str(folder_dataset), "--json"])
    rep = json.loads(out)
    assert code == 0 and rep["usable"] and rep["classes"] == {"benign": 10, "malignant": 10}
    assert rep["problems"] == [] and rep["image_sizes"] == {"32x32": 20}


def test_split_is_stratified_seeded_and_saved(folder_dataset, tmp_path):
    ds = load_folder(folder_dataset, 32)
    m, _ = make_manifest(ds, [3, 1, 1], seed=7)
    counts = {
        s: {
            c: sum(1 for it in m.items if it["split"] == s and it["class"] == c)
            for c in ds.class_names
        }
        for s in ("train", "val", "test")
    }
    assert counts == {
        "train": {"benign": 6, "malignant": 6},
        "val": {"benign": 2, "malignant": 2},
        "test": {"benign": 2, "malignant": 2},
    }
    again, _ = make_manifest(ds, [3, 1, 1], seed=7)
    assert again.items == m.items and again.hash == m.hash
    other, _ = make_manifest(ds, [3, 1, 1], seed=8)
    assert other.hash != m.hash
    loaded = Manifest.load(m.save(tmp_path / "split.json"))
    assert loaded.hash == m.hash and all(len(it["sha256"]) == 64 for it in loaded.items)
    ks = repeated_manifests(ds, [3, 1, 1], 0, 3)
    assert len({k.hash for k in ks}) == 3


def test_repeated_splits_must_differ(folder_dataset):
    for cls in (
        "benign",
        "malignant",
    ):  # 2 images per class: split 1:1 there are 2 × 2 = 4 assignments
        for p in sorted((folder_dataset / cls).glob("*.png"))[2:]:
            p.unlink()
    ds = load_folder(folder_dataset, 32)
    with pytest.raises(DataError, match="too small for 5 distinct repeats.*lower data.n_splits"):
        repeated_manifests(ds, [1, 1, 0], 0, 5)


def test_duplicates_stay_together_and_leakage_is_refused(folder_dataset):
    img = blob_image(3)
    write_png(folder_dataset / "benign" / "copy_a.png", img)
    write_png(folder_dataset / "benign" / "copy_b.png", img)
    near = img.copy()
    # One pixel: a near-duplicate, not byte-identical. Inside the image: blob images have a
    # noise-free flat background, so their edge rows are padding bands that loading crops off,
    # and a changed corner pixel would change the crop rather than make a near-duplicate.
    near[16, 16] = 255 - near[16, 16]
    write_png(folder_dataset / "benign" / "copy_c.png", near)
    ds = load_folder(folder_dataset, 32)
    for seed in range(5):
        m, pairs = make_manifest(ds, [3, 1, 1], seed=seed)
        split_of = {it["name"]: it["split"] for it in m.items}
        names = [f"benign/copy_{x}.png" for x in "abc"] + ["benign/benign_03.png"]
        assert len({split_of[n] for n in names}) == 1
    assert any(k == "exact" for *_, k in pairs) and any(k == "near" for *_, k in pairs)
    # A manifest that puts the copies in different splits is refused, naming both files.
    for it in m.items:
        if it["name"] == "benign/copy_a.png":
            it["split"] = "train"
        if it["name"] == "benign/copy_b.png":
            it["split"] = "test"
    with pytest.raises(
        DataError,
        match=r"leakage: benign/\w+.png \(train\) and benign/copy_b.png \(test\) are exact duplicates",
    ):
        check_leakage(m)


def test_breakhis_names_magnification_and_patient_groups(tmp_path):
    assert parse_breakhis("SOB_B_A-14-22549AB-40-001") == {
        "cls": "benign",
        "subtype": "A",
        "patient": "14-22549AB",
        "magnification": 40,
    }
    assert parse_breakhis("SOB_M_DC-14-2523-400-010")["magnification"] == 400
    assert parse_breakhis("random_name") is None
    root = tmp_path / "bh"
    k = 0
    for cls, letter in (("benign", "B"), ("malignant", "M")):
        for patient in (f"14-{letter}{p}" for p in range(5)):  # a patient has one diagnosis
            for mag in (40, 100):
                for seq in (1, 2):
                    k += 1
                    write_png(
                        root / cls / f"SOB_{letter}_A-{patient}-{mag}-{seq:03d}.png", blob_image(k)
                    )
    recs = require_folder(root, magnification=40)
    assert len(recs) == 20 and {r.magnification for r in recs} == {40}
    ds = load_folder(root, 32, magnification=100)
    m, _ = make_manifest(ds, [3, 1, 1], seed=0)
    by_patient: dict = {}
    for it, g in zip(m.items, ds.groups):
        by_patient.setdefault(g, set()).add(it["split"])
    assert all(len(s) == 1 for s in by_patient.values())  # no patient in two splits
    write_png(root / "benign" / "SOB_M_A-14-999-40-001.png", blob_image(999))
    with pytest.raises(DataError, match="BreakHis name says 'malignant'"):
        require_folder(root)


def test_load_split_reuses_only_a_matching_manifest(folder_dataset, tmp_path, capsys):
    import dataclasses

    from cytoray.config import DataConfig
    from cytoray.data.source import load_split

    cfg = DataConfig(root=str(folder_dataset), size=32, split_seed=3)
    path = tmp_path / "split.json"
    _, m = load_split(cfg, path)
    _, again = load_split(cfg, path)
    assert again.hash == m.hash and "making a new split" not in capsys.readouterr().err
    for change in ({"split_seed": 4}, {"split_ratios": [2.0, 1.0, 1.0]}, {"size": 24}):
        _, other = load_split(dataclasses.replace(cfg, **change), path)
        assert "making a new split" in capsys.readouterr().err, change
        assert Manifest.load(path).hash == other.hash  # the new split replaced the file
        _, back = load_split(cfg, path)  # and the original settings give the original split back
        assert back.hash == m.hash
        capsys.readouterr()


# ----------------------------------------------------------------------------- padding bands


def _textured(size: int = 64, seed: int = 0) -> np.ndarray:
    """A pale field with camera noise and dark blobs: real content has texture, padding none."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(225, 6, (size, size, 3)), 0, 255).astype(np.uint8)
    for _ in range(6):
        r, c = rng.integers(8, size - 8, 2)
        img[r - 3 : r + 3, c - 3 : c + 3] = (80, 50, 130)
    return img


def test_detect_bands_cases(tmp_path):
    from PIL import Image

    from cytoray.data.background import detect_bands

    clean = _textured()
    assert not detect_bands(clean).any()  # textured content at every edge: nothing to cut
    tb = clean.copy()
    tb[:10], tb[-7:] = (147, 137, 164), (147, 137, 164)  # Herlev-style: padded to a square, mauve
    b = detect_bands(tb)
    assert (b.top, b.bottom, b.left, b.right) == (10, 7, 0, 0) and b.colours["top"].tolist() == [
        147,
        137,
        164,
    ]
    assert (
        "top 10 px (147,137,164)" in b.describe()
        and not b.content()[:11].any()
        and b.content()[12:-9].all()
    )
    ell = clean.copy()
    ell[:, :5], ell[:6] = (
        (20, 20, 20),
        (200, 200, 200),
    )  # a black scanner margin on the left, a grey band on top
    b = detect_bands(ell)
    assert (b.top, b.left) == (6, 5) and b.bottom == b.right == 0
    # JPEG ringing at the seam still reads as a band (Herlev-like: 224 px, bands of 40 and 37 px)
    big = _textured(224)
    big[:40], big[-37:] = (147, 137, 164), (147, 137, 164)
    for q in (75, 90):
        Image.fromarray(big).save(tmp_path / "x.jpg", quality=q)
        b = detect_bands(np.asarray(Image.open(tmp_path / "x.jpg")))
        assert 32 <= b.top <= 40 and 30 <= b.bottom <= 37 and b.left == b.right == 0, (
            q,
            b.describe(),
        )
    flat = np.full((40, 40, 3), 128, np.uint8)
    assert detect_bands(flat).flat and detect_bands(flat).box() == (0, 40, 0, 40)


def test_load_folder_crops_padding_and_keeps_hashes(tmp_path):
    from cytoray.data.background import detect_bands
    from cytoray.errors import ConfigError
    from cytoray.io import sha256_file

    root = tmp_path / "padded"
    for c, cls in enumerate(("benign", "malignant")):
        for i in range(3):
            img = _textured(seed=10 * c + i)
            mask = np.zeros(img.shape[:2], np.uint8)
            mask[30:34, 30:34] = 255
            img[:12], img[-12:] = (90, 80, 120), (90, 80, 120)
            write_png(root / cls / f"{i}.png", img)
            write_png(root / cls / "masks" / f"{i}.png", mask)
    kept = load_folder(root, 32, padding="keep")
    cropped = load_folder(root, 32)
    assert cropped.padding == "crop" and kept.padding == "keep"
    assert all(detect_bands(im).any() for im in kept.images) and not any(
        detect_bands(im).any() for im in cropped.images
    )
    assert (
        (cropped.images[:, :2] != (90, 80, 120)).any(axis=-1).all()
    )  # no band colour left on the top rows
    assert cropped.names == kept.names and cropped.sha256 == kept.sha256 == [
        sha256_file(root / n) for n in kept.names
    ]
    # the mask went through the same crop: the centre square stays in the centre of the content
    assert (
        cropped.masks is not None
        and cropped.masks[:, 12:20, 12:20].any()
        and not cropped.masks[:, :4].any()
    )
    with pytest.raises(ConfigError, match="padding='frame'"):
        load_folder(root, 32, padding="frame")


def test_validate_reports_padding_and_flat_images(folder_dataset, capsys):
    img = blob_image(77)
    img[:, :6] = (60, 60, 60)
    write_png(
        folder_dataset / "benign" / "a_padded.png", img
    )  # first in scan order: among the examples
    write_png(folder_dataset / "malignant" / "blank.png", np.full((32, 32, 3), 128, np.uint8))
    code, out = _err(capsys, ["validate", str(folder_dataset), "--json"])
    rep = json.loads(out)
    assert code == 1 and [Path(p["file"]).name for p in rep["problems"]] == ["blank.png"]
    assert "one flat colour" in rep["problems"][0]["problem"]
    pad = rep["padding"]
    assert pad["images"] >= 1 and any(
        Path(e["file"]).name == "a_padded.png" and e["left"] == 6 for e in pad["examples"]
    )
    code, out = _err(capsys, ["validate", str(folder_dataset)])
    assert "padding bands:" in out and "training crops cut them off" in out


def test_validate_calls_a_folder_unusable_when_the_split_leaves_a_class_too_few(tmp_path, capsys):
    """3 images per class: a 3:1:1 split trains on 1 image per class, which makes no optimiser step."""
    from conftest import blob_image, write_png

    from cytoray.data.validate import MIN_PER_SPLIT, min_images, split_shortfall

    for c, cls in enumerate(("benign", "malignant")):
        for i in range(3 if cls == "benign" else 4):
            write_png(tmp_path / "ds" / cls / f"{i}.png", blob_image(10 * c + i))
    code, out = _err(capsys, ["validate", str(tmp_path / "ds"), "--json"])
    rep = json.loads(out[out.index("{") :])
    assert code == 1 and not rep["usable"]
    [problem] = rep["problems"]
    assert Path(problem["file"]).name == "benign" and "train 1, val 1, test 1" in problem["problem"]
    assert "needs at least 4 images" in problem["problem"]
    assert (
        MIN_PER_SPLIT == {"train": 2, "val": 1, "test": 1}
        and min_images([3, 1, 1]) == 4
        and min_images([8, 1, 1]) == 4
    )
    assert (
        split_shortfall(4, [3, 1, 1]) is None
        and split_shortfall(1, [1, 0, 0])
        and not split_shortfall(2, [1, 0, 0])
    )
