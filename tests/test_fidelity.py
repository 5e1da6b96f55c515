"""FID/KID with the real offline Inception weights (cytoray.metrics.fidelity).

CPU cost to keep in mind: ~0.15-0.25 s per image through Inception (299x299, one thread) and
~4 s per FID (torch-fidelity's eigvals of a 2048x2048 matrix), so tests that compute several
FIDs are marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from cytoray.errors import CytorayError, DataError
from cytoray.metrics import fidelity as F
from cytoray.metrics import fidelity_dirs as FD

# ----- images with structure (seeded, no files)


def structured(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size, 3]: tinted background, sinusoidal stripes and dark round blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        img = np.empty((size, size, 3))
        img[:] = rng.uniform(170, 240, 3)
        f, th = rng.uniform(0.15, 0.6), rng.uniform(0, np.pi)
        img += (
            25 * np.sin(f * (np.cos(th) * xx + np.sin(th) * yy))[..., None] * rng.uniform(-1, 1, 3)
        )
        for _ in range(rng.integers(3, 8)):
            cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(3, 9)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(30, 140, 3)
        out[i] = np.clip(img, 0, 255)
    return out


def blur(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return x
    return np.clip(
        np.rint(gaussian_filter(x.astype(np.float64), sigma=(0, sigma, sigma, 0))), 0, 255
    ).astype(np.uint8)


def colour_shift(x: np.ndarray, amount: int) -> np.ndarray:
    return np.clip(x.astype(np.int16) + np.array([amount, -amount, amount]), 0, 255).astype(
        np.uint8
    )


def reference_image() -> np.ndarray:
    """A fixed 64x64 RGB image: red ramp, 8-px checkerboard in green, blue ramp down."""
    yy, xx = np.mgrid[0:64, 0:64]
    return np.stack(
        [(xx * 4) % 256, ((xx // 8 + yy // 8) % 2) * 200 + 20, (yy * 4) % 256], -1
    ).astype(np.uint8)


@pytest.fixture(scope="module")
def imgs() -> np.ndarray:
    return structured(12)


@pytest.fixture(scope="module")
def feats(imgs) -> np.ndarray:
    return F.inception_features(imgs)


# ----- the extractor is the real, verified one


def test_reference_features_match_recorded_values():
    # Recorded with the published default_1.pt (sha1 a16e4d89...) on CPU; random or other weights fail.
    f = F.inception_features(reference_image()[None])
    assert f.shape == (1, 2048) and f.dtype == np.float64
    first8 = [
        1.38058513e-01,
        2.01846734e-02,
        9.21986811e-03,
        2.28241198e-02,
        2.24347299e-04,
        3.12074125e-01,
        9.49387997e-02,
        0.0,
    ]
    np.testing.assert_allclose(f[0, :8], first8, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(f[0]), 16.403169930806364, rtol=1e-3)
    np.testing.assert_allclose(f[0].mean(), 0.18354937106156877, rtol=1e-3)
    assert int(f[0].argmax()) == 478


def test_layouts_agree_and_identity_is_recorded():
    x = reference_image()[None]
    nhwc = F.inception_features(x)
    nchw = F.inception_features(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(nhwc, nchw)
    ident = F.extractor_identity()
    assert ident == {
        "feature_extractor": "inception-v3-nv-torchscript",
        "feature_layer": "2048",
        "weights_sha1": "a16e4d89c0ecbc17a915dd76ea9e41211aa82562",
        "resize": "bilinear-tf1x 299",
        "input_range": [-1.0, 0.9921875],
    }
    with pytest.raises(DataError, match="uint8"):
        F.inception_features(x.astype(np.float32))


def test_other_weights_are_refused(tmp_path, monkeypatch):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the inception network")
    monkeypatch.setenv(F.WEIGHTS_ENV, str(fake))
    with pytest.raises(CytorayError, match="sha1"):
        F.extractor_identity()
    with pytest.raises(CytorayError, match="sha1"):
        F.inception_features(reference_image()[None])
    monkeypatch.setenv(F.WEIGHTS_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(CytorayError, match="missing.pt"):
        F.extractor_identity()


def test_registration_is_idempotent():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    F._register()
    F._register()
    assert FEATURE_EXTRACTORS_REGISTRY[F.EXTRACTOR] is F.InceptionV3NVTorchScript


# ----- metrics


def test_fid_kid_of_a_set_with_itself(feats):
    r = F.fid_kid_from_features(feats, feats)
    assert abs(r["fid"]) < 1e-3
    # torch-fidelity's KID is the unbiased MMD^2; for a set against itself (subset = whole set)
    # it is exactly -2/m * (mean k(x,x) - mean_{i!=j} k(xi,xj)), O(1/m), not 0.
    f = feats.astype(np.float32).astype(np.float64)
    k = (f @ f.T / 2048 + 1) ** 3
    m = len(f)
    expected = -2 / m * (np.diag(k).mean() - (k.sum() - np.trace(k)) / (m * (m - 1)))
    assert r["kid_subset_size"] == m and r["n1"] == r["n2"] == m
    np.testing.assert_allclose(r["kid_mean"], expected, rtol=1e-3)
    assert r["kid_std"] < 1e-5  # every subset is the whole set
    assert r["weights_sha1"] == F.WEIGHTS_SHA1 and r["kid_subsets"] == 100


def test_kid_subset_size_rules(feats):
    assert F.kid_subset_size(5, 7) == 5 and F.kid_subset_size(5000, 3000) == 1000
    with pytest.raises(DataError, match="fake/benign: 1 image"):
        F.fid_kid_from_features(feats[:1], feats, names=("fake/benign", "real/benign"))
    with pytest.raises(DataError, match="not finite"):
        F.fid_kid_from_features(feats[:, :100], feats)


@pytest.mark.slow
def test_fid_rises_with_distortion(imgs, feats):
    fids, kids = [], []
    for sigma in (1, 2, 3):
        r = F.fid_kid_from_features(feats, F.inception_features(blur(imgs, sigma)))
        fids.append(r["fid"])
        kids.append(r["kid_mean"])
    base = F.fid_kid_from_features(feats, feats)
    fids, kids = [base["fid"]] + fids, [base["kid_mean"]] + kids
    # measured (12 images, 48 px): FID 0.0, 223, 285, 313; KID -0.042, 0.155, 0.240, 0.276
    assert np.all(np.diff(fids) > 5), fids
    assert np.all(np.diff(kids) > 0), kids
    shifted = F.fid_kid_from_features(feats, F.inception_features(colour_shift(imgs, 40)))
    assert shifted["fid"] > 50 and shifted["kid_mean"] > base["kid_mean"]  # measured 113, 0.0074


@pytest.mark.slow
def test_feature_path_equals_torch_fidelity_calculate_metrics(imgs, feats):
    other = blur(imgs, 2)[:9]
    ref = F.fid_kid_torch_fidelity(imgs, other, kid_subsets=50, seed=3)
    ours = F.fid_kid_from_features(feats, F.inception_features(other), kid_subsets=50, seed=3)
    for key in ("fid", "kid_mean", "kid_std"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=1e-4, err_msg=key)
    assert ours["kid_subset_size"] == ref["kid_subset_size"] == 9


# ----- feature cache


def test_cache_hit_does_not_run_the_model(imgs, tmp_path, monkeypatch):
    first = F.cached_features(imgs[:3], "manifest123/test/benign", tmp_path)
    assert len(list(tmp_path.glob("manifest123_test_benign-*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("model ran on a cache hit")

    monkeypatch.setattr(F, "_features_from_batches", boom)
    again = F.cached_features(imgs[:3], "manifest123/test/benign", tmp_path)
    np.testing.assert_array_equal(first, again)
    assert again.dtype == np.float64 and again.shape == (3, 2048)
    # Same key, other images: never the stale features (here the patched model must run).
    with (
        pytest.warns(UserWarning, match="other images"),
        pytest.raises(AssertionError, match="model ran"),
    ):
        F.cached_features(imgs[3:6], "manifest123/test/benign", tmp_path)


# ----- folders


def _write(path, arr):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_fid_kid_dirs_small_sets(imgs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for i in range(4):
        _write(a / "sub" / f"{i}.png", imgs[i])
    _write(
        a / "big.png", structured(1, size=64, seed=5)[0]
    )  # other size -> all resized to the first image's
    (a / "masks").mkdir()
    (a / "masks" / "junk.png").write_bytes(b"not a png")  # would raise if read
    for i in range(7):
        _write(b / f"{i}.png", imgs[5 + i])
    r = FD.fid_kid_dirs(a, b, kid_subsets=20)
    # KID subset size adapts to the 5-image set; subsets of 5 out of 7 differ, so the std is real.
    assert (r["kid_subset_size"], r["n1"], r["n2"], r["kid_subsets"]) == (5, 5, 7, 20)
    assert r["kid_std"] > 0 and np.isfinite(r["fid"]) and r["fid"] > 0
    # One protocol whatever the order: each image from its own size to 299 by the extractor. (Before,
    # both folders were resized to the first image's size, 64x64 here and 48x48 swapped.)
    assert (
        r["image_resize"]
        == "each image from its own size to 299x299 by the extractor (TF1 bilinear, align_corners=False)"
    )
    assert r["weights_sha1"] == F.WEIGHTS_SHA1 and r["dir_a"] == str(a)
    swapped = FD.fid_kid_dirs(b, a, kid_subsets=20)
    assert abs(swapped["fid"] - r["fid"]) < 1e-6 and (swapped["n1"], swapped["n2"]) == (7, 5)
    assert swapped["kid_mean"] == r["kid_mean"] and swapped["kid_std"] == r["kid_std"]
    np.testing.assert_equal(
        swapped["floor_a"], r["floor_b"]
    )  # (NaN == NaN here: too few images to fit a slope)
    np.testing.assert_equal(swapped["floor_b"], r["floor_a"])
    assert r["floor_a"]["floor_n1"] == 2 and r["floor_b"]["floor_n2"] == 4  # halves of 5 and of 7
    # A folder's features are its images' own: a mixed-size folder is batched by size, in file order.
    from cytoray.data.images import read_rgb

    paths = FD.list_images(a)
    own = np.concatenate([F.inception_features(read_rgb(p)[None]) for p in paths])
    np.testing.assert_allclose(FD.folder_features(paths, batch_size=3), own, rtol=1e-5, atol=1e-5)
    assert r["headline"] == "kid" and "2049" in r["warning"] and "KID" in r["warning"]
    lines = F.describe(r, ("a", "b"))
    assert lines[0].startswith("KID") and "[headline]" in lines[0] and "flagged" in lines[1]
    assert any(line.startswith("a: real-vs-real FID") for line in lines) and lines[-1].startswith(
        "WARNING"
    )
    sized = FD.fid_kid_dirs(
        a, b, size=32, kid_subsets=20
    )  # --size: the same pre-resize for both folders
    assert sized["image_resize"].startswith("each image PIL bicubic to 32x32, then to 299x299")

    with pytest.raises(DataError, match="nowhere"):
        FD.fid_kid_dirs(tmp_path / "nowhere", a)
    one = tmp_path / "one"
    _write(one / "x.png", imgs[0])
    with pytest.raises(DataError, match=r"one: 1 image"):
        FD.fid_kid_dirs(a, one)


# ----- per-class figures


@pytest.mark.slow
def test_per_class_names_and_values(imgs, feats):
    real = {"benign": imgs[:6], "malignant": imgs[6:]}
    fake = {"benign": blur(imgs[:6], 2), "malignant": imgs[6:]}
    out = F.per_class(real, fake, "val", real_features={"benign": feats[:6]}, kid_subsets=10)
    for cls in ("benign", "malignant", "all"):
        for name in (
            "fid_val_inception/",
            "kid_val_inception_mean/",
            "kid_val_inception_std/",
            "kid_val_inception_subset_size/",
        ):
            assert isinstance(out[name + cls], float)
    assert abs(out["fid_val_inception/malignant"]) < 1e-3
    assert out["fid_val_inception/benign"] > 100
    assert out["kid_val_inception_subset_size/all"] == 12
    # Every figure carries its n; real sets of >= 4 images get their real-vs-real floor next to it.
    real_feats = {
        "benign": feats[:6],
        "malignant": feats[6:],
        "all": feats,
    }  # imgs[6:] are real = fake
    for cls, n in (("benign", 6), ("malignant", 6), ("all", 12)):
        assert (out[f"fid_val_inception_n_real/{cls}"], out[f"fid_val_inception_n_fake/{cls}"]) == (
            n,
            n,
        )
        floor = F.real_floor(real_feats[cls], n)
        assert out[f"fid_val_inception_floor/{cls}"] == pytest.approx(floor["fid_floor"], rel=1e-6)
        assert out[f"kid_val_inception_floor_mean/{cls}"] == pytest.approx(
            floor["kid_floor_mean"], rel=1e-6
        )
    notes = F.per_class_notes(out, "val")
    assert len(notes) == 3 and notes[0].startswith("val/all: KID") and "2049" in notes[0]
    with pytest.raises(CytorayError, match="lymph"):
        F.per_class(real, {"lymph": imgs[:3]}, "val")


def test_per_class_floors_reuse_the_features(imgs, feats, monkeypatch):
    # One network pass per fake class; the floors (and the pooled figure) reuse features.
    calls = []
    run = F._features_from_batches

    def counting(batches, device):
        out = run(batches, device)
        calls.append(len(out))
        return out

    monkeypatch.setattr(F, "_features_from_batches", counting)
    out = F.per_class(
        {},
        {"benign": imgs[:3], "malignant": imgs[3:5]},
        "test",
        real_features={"benign": feats[:5], "malignant": feats[5:]},
        kid_subsets=5,
    )
    assert calls == [3, 2]
    assert (
        out["fid_test_inception_n_real/malignant"] == 7
        and out["fid_test_inception_n_fake/malignant"] == 2
    )
    assert "fid_test_inception_floor/malignant" in out and "fid_test_inception_floor/benign" in out
    assert all(isinstance(v, float) for v in out.values())  # MLflow metrics
