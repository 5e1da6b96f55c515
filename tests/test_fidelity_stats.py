"""FID/KID statistics on features (cytoray.metrics.fidelity_stats): exact symmetric FID,
the real-vs-real floor, the small-sample headline and its warning. No network runs here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg

from cytoray.errors import DataError
from cytoray.metrics import fidelity_stats as S


def gaussian_features(
    n: int, shift: float = 0.0, seed: int = 0, d: int = S.FEATURE_DIM
) -> np.ndarray:
    """Correlated non-negative features like pool activations: a few latent factors + noise, ReLU'd."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(123).normal(0, 1, (8, d))  # the same "network" for every set
    z = rng.normal(shift, 1, (n, 8))
    f = np.maximum(0, 0.3 * z @ mix / math.sqrt(8) + 0.2 * rng.normal(0, 1, (n, d)) + 0.3)
    return f.astype(np.float32).astype(
        np.float64
    )  # the network's precision, as the metrics hold it


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    """TTUR's textbook formula with scipy's sqrtm (the slow path torch-fidelity's eigvals approximates)."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    d = a.mean(0) - b.mean(0)
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize(
    "n1,n2", [(5, 9), (40, 30)]
)  # both branches at d=16: n1*n2 <= d^2 and > d^2
def test_frechet_distance_is_the_textbook_formula_and_symmetric(n1, n2):
    a, b = gaussian_features(n1, 0.0, 1, d=16), gaussian_features(n2, 0.7, 2, d=16)
    fid = S.frechet_distance(a, b)
    assert fid == pytest.approx(reference_fid(a, b), rel=1e-6)
    assert abs(S.frechet_distance(b, a) - fid) < 1e-10
    assert abs(S.frechet_distance(a, a)) < 1e-9


def test_kid_is_symmetric_and_validated():
    a, b = gaussian_features(12, 0.0, 1), gaussian_features(9, 0.5, 2)
    k = S.kid_subset_size(12, 9)
    assert S.kid(a, b, 30, k, 3) == S.kid(b, a, 30, k, 3)
    assert S.kid(a, b, 30, k, 3) != S.kid(a, b, 30, k, 4)  # the seed picks the subsets
    with pytest.raises(DataError, match="not finite"):
        S.as_features(a[:, :100], "fake/x")


def test_real_floor_is_seeded_halves_of_the_same_features():
    f = gaussian_features(20, seed=5)
    fl = S.real_floor(f, n_other=30, splits=4, seed=7, kid_subsets=10)
    rng = np.random.default_rng(7)  # the documented procedure, by hand
    perms = [rng.permutation(20) for _ in range(4)]
    by_hand = [S.frechet_distance(f[p[:10]], f[p[10:]]) for p in perms]
    assert fl["fid_floor"] == pytest.approx(np.mean(by_hand), rel=1e-12)
    assert fl["fid_floor_sd"] == pytest.approx(np.std(by_hand, ddof=1), rel=1e-12)
    assert (fl["floor_n1"], fl["floor_n2"], fl["floor_splits"], fl["floor_seed"]) == (10, 10, 4, 7)
    assert (
        fl["fid_floor"] > 0 and abs(fl["kid_floor_mean"]) < 3 * fl["kid_floor_sd"] + 1e-3
    )  # KID: unbiased
    # Smaller pairs score higher (the bias), so the fitted exponent is positive and the floor at
    # the figure's larger harmonic size (20 vs 30 -> 24) is below the halves' (10 vs 10).
    assert fl["floor_exponent"] > 0 and fl["fid_floor_at_n"] < fl["fid_floor"]
    h = 2 / (1 / 20 + 1 / 30)
    assert fl["fid_floor_at_n"] == pytest.approx(fl["fid_floor"] * (10 / h) ** fl["floor_exponent"])
    assert S.real_floor(f, n_other=30, splits=4, seed=7, kid_subsets=10) == fl  # seeded
    assert S.real_floor(f, splits=4, seed=8, kid_subsets=10)["fid_floor"] != fl["fid_floor"]
    assert "fid_floor_at_n" not in S.real_floor(f, splits=2, kid_subsets=5)  # no other size given
    assert S.real_floor(f[:3]) is None  # halves of 1 image have no covariance
    small = S.real_floor(
        f[:6], n_other=6, splits=3, kid_subsets=5
    )  # halves 3/3, quarters of 1: no fit
    assert math.isnan(small["floor_exponent"]) and math.isnan(small["fid_floor_at_n"])


def test_headline_warning_and_description():
    assert S.headline(2048, 5000) == "kid" and S.headline(S.FID_MIN_N, S.FID_MIN_N) == "fid"
    f = gaussian_features(16, seed=1)
    r = {
        "fid": 123.4,
        "kid_mean": 0.0123,
        "kid_std": 0.002,
        "kid_subset_size": 16,
        "kid_subsets": 100,
        "n1": 16,
        "n2": 40,
        "headline": "kid",
        "feature_extractor": "x",
        "weights_sha1": "a16e4d89c0ec" * 3,
        "resize": "bilinear-tf1x 299",
        "floor_a": S.real_floor(f, 40, splits=3, kid_subsets=5),
        "floor_b": None,
    }
    w = S.small_sample_warning(r, ("real", "fake"))
    assert "16/40" in w and f"at least {S.FID_MIN_N} images per set" in w and "KID (0.0123" in w
    assert f"real: real-vs-real FID {r['floor_a']['fid_floor']:.1f}" in w and "fake: no floor" in w
    lines = S.describe(r, ("real", "fake"))
    assert lines[0] == "KID 0.01230 ± 0.00200 (n=16/40, subsets of 16 x 100)  [headline]"
    assert lines[1].startswith("FID 123.400 (n=16/40)  [flagged")
    assert lines[-1] == "WARNING: " + S.small_sample_warning(r, ("real", "fake"), floors=False)
    assert lines[2].startswith("real: real-vs-real FID") and "real-vs-real FID" not in lines[-1]
    big = {**r, "n1": 5000, "n2": 3000, "headline": "fid", "floor_a": None}
    assert S.small_sample_warning(big) == "" and S.describe(big)[0].startswith("FID 123.400")
    assert not any(line.startswith("WARNING") for line in S.describe(big))


def test_per_class_notes_flag_small_sets_only():
    m = {
        "fid_val_inception/benign": 236.1,
        "kid_val_inception_mean/benign": 0.0123,
        "kid_val_inception_std/benign": 0.004,
        "fid_val_inception_n_real/benign": 37.0,
        "fid_val_inception_n_fake/benign": 30.0,
        "fid_val_inception_floor/benign": 183.3,
        "fid_val_inception_floor_sd/benign": 6.1,
        "fid_val_inception_floor_at_n/benign": 170.2,
        "fid_val_inception/all": 12.0,
        "fid_val_inception_n_real/all": 5000.0,
        "fid_val_inception_n_fake/all": 5000.0,
    }
    notes = S.per_class_notes(m, "val")
    assert notes == [
        "val/benign: KID 0.0123 ± 0.0040 is the headline (n=37/30 < 2049); FID 236.1 is biased at this n: "
        "real-vs-real FID 183.3 ± 6.1 (two seeded halves of the real set), ~170.2 at this n"
    ]


def test_metric_names_state_the_protocol_in_one_place():
    """metrics/names.py spells every fidelity figure; per_class_notes reads back what it spells."""
    from cytoray.metrics import names

    assert names.fid("val") == names.FID_VAL == "fid_val_inception/all"
    assert names.kid("test", "benign") == "kid_test_inception_mean/benign"
    assert names.kid("test", part="std") == "kid_test_inception_std/all"
    assert names.fid("val", "b", "n_real") == "fid_val_inception_n_real/b"
    assert names.MASK_FID_VAL == "fid_val_mask_inception/all"
    assert names.realism("memorised_share", "val", "b") == "memorised_share_val_inception/b"
    assert names.realism("prdc", "val", "b", "k") == "prdc_val_inception_k/b"
    m = {
        names.fid("val", "b"): 80.0,
        names.fid("val", "b", "n_real"): 20.0,
        names.fid("val", "b", "n_fake"): 20.0,
        names.kid("val", "b"): 0.05,
        names.kid("val", "b", "std"): 0.01,
        names.kid("val", "b", "subset_size"): 10.0,
        names.fid("val", "b", "floor"): 60.0,
        names.fid("val", "b", "floor_sd"): 5.0,
    }
    (line,) = S.per_class_notes(m, "val")
    assert line.startswith("val/b: KID 0.0500") and "real-vs-real FID 60.0 ± 5.0" in line
