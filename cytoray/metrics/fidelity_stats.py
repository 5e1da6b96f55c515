"""FID/KID statistics on Inception features, and what they mean at small n.

Split from `fidelity.py` (images → features there, numbers here). Everything works on float
[N, 2048] features, so nothing here runs the network: the floors below reuse the features a
figure was computed from.

FID, exactly and symmetrically. FID = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), the
formula of torch-fidelity (and TTUR). tr sqrt(S1 S2) is the nuclear norm (sum of singular
values) of A1 A2^T, with Si = Ai^T Ai and Ai the centred features / sqrt(ni - 1): the nonzero
eigenvalues of S1 S2 are the squared singular values of A1 A2^T. torch-fidelity instead takes
eigvals of the 2048x2048 product, which costs ~4 s on a CPU, and below n = 2048 sums square
roots of ~2000 round-off eigenvalues (measured: -7e-5 off on Herlev sets). The nuclear norm of
M and of M^T is one number, so FID(A, B) = FID(B, A) to round-off (measured 1e-13), and it
costs milliseconds at small n, which makes the floors below affordable.

KID is torch-fidelity's `kid_features_to_metric` (unbiased MMD^2, cubic kernel). Its formula is
symmetric but its seeded subsets are drawn first set first, so the two sets are handed over in
a canonical order (more images first, then by content hash): KID(A, B) = KID(B, A) too, and
it equals `calculate_metrics(input1=larger set, input2=smaller set)` with the same seed.

Small n. FID's covariance has rank n - 1, so it is biased until n exceeds the 2048 feature
dimensions (TTUR, the FID authors' code: "the number of samples ... should be greater than the
dimension of the coding layer, here 2048"; they recommend 10,000). Below FID_MIN_N, KID
(unbiased at any n) is the headline and FID is shown flagged, next to its real-vs-real floor:
the FID between two seeded halves of one set, averaged over FLOOR_SPLITS splits.

Measured (Herlev dev, 75 normal / 75 abnormal Pap cells, 224 px; BreCaHAD 30 H&E tiles; 200
random disjoint pairs per size): the real-vs-real FID of two sets of m images does NOT shrink
like 1/m at these sizes (that is Chong & Forsyth's large-n regime) but like m^-0.3 ... m^-0.5:
normal 419, 353, 276, 223, 183 at m = 3, 5, 10, 20, 37 (power-law fit alpha 0.32, within 1.5%),
abnormal alpha 0.30, H&E alpha 0.48; two sets of unequal sizes behave like equal sets of their
harmonic mean h = 2 / (1/n1 + 1/n2) (e.g. 10 vs 30 images: 252, m = 15: 246). So the floor of a
set's halves (h ~ n/2) overstates the floor at the figure's own sizes (h up to n): `real_floor`
fits the exponent on the set's own halves, quarters and eighths and reports `fid_floor_at_n`,
the floor extrapolated to the figure's h (checked: predicted from 37-image sets to h = 37,
normal 181 +- 7 vs 183 measured, abnormal 183 +- 5 vs 182). With 1/m ruled out, no "needed n"
is extrapolated from the fit (it would be far outside the measured range); the needed n that
the warnings name is the full-rank bound FID_MIN_N.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch_fidelity.metric_kid import (
    KEY_METRIC_KID_MEAN,
    KEY_METRIC_KID_STD,
    kid_features_to_metric,
)

from ..errors import CytorayError, DataError
from . import names

FEATURE_DIM = 2048
# rank(S) = n - 1 must reach the dimension (TTUR); below, KID is the headline
FID_MIN_N = FEATURE_DIM + 1
# seeded halvings averaged per floor: the spread of one halving is ~3-20% at these n
FLOOR_SPLITS = 10
# KID subsets per halving: subsets have the smaller half's size, so with equal halves every subset
# is a whole half and they all agree; the spread over FLOOR_SPLITS halvings is the floor's noise.
FLOOR_KID_SUBSETS = 10
KID_MAX_SUBSET = 1000


# ----- inputs


def kid_subset_size(n1: int, n2: int, names: tuple[str, str] = ("first set", "second set")) -> int:
    """min(1000, n1, n2): the torch-fidelity default shrunk to small sets; at least 2."""
    for n, name in zip((n1, n2), names):
        if n < 2:
            raise DataError(f"{name}: {n} image(s); FID/KID need at least 2 per set (add images)")
    return min(KID_MAX_SUBSET, n1, n2)


def as_features(f, name: str) -> np.ndarray:
    """float64 copy of float32-rounded features (the network's precision, as torch-fidelity holds them)."""
    a = np.asarray(f)
    if a.ndim != 2 or a.shape[1] != FEATURE_DIM or not np.isfinite(a).all():
        raise DataError(
            f"{name}: features of shape {a.shape} are not "
            f"finite [N, {FEATURE_DIM}] Inception features"
        )
    return a.astype(np.float32).astype(np.float64)


# ----- FID and KID


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets [n, d] (float64), exact and symmetric (see the module doc)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1 = (f1 - mu1) / math.sqrt(len(f1) - 1)
    a2 = (f2 - mu2) / math.sqrt(len(f2) - 1)
    d = f1.shape[1]
    if len(f1) * len(f2) <= d * d:  # small sets: the n1 x n2 cross-product
        tr_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    else:  # large sets: the same nuclear norm through the d x d square roots (eigh: symmetric, stable)
        roots = []
        for a in (a1, a2):
            w, v = np.linalg.eigh(a.T @ a)
            roots.append((v * np.sqrt(np.clip(w, 0, None))) @ v.T)
        tr_sqrt = np.linalg.svd(roots[0] @ roots[1], compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(a1 * a1) + np.sum(a2 * a2) - 2.0 * tr_sqrt)


def _digest(f: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(f, dtype=np.float32).tobytes()).hexdigest()


def kid(
    f1: np.ndarray, f2: np.ndarray, kid_subsets: int, subset_size: int, seed: int
) -> tuple[float, float]:
    """torch-fidelity's KID (mean, std over subsets), the sets in a canonical order (symmetric)."""
    if kid_subsets < 1:
        raise CytorayError(f"kid_subsets={kid_subsets}: must be at least 1")
    if (len(f2), _digest(f2)) > (len(f1), _digest(f1)):  # more images first, then by content
        f1, f2 = f2, f1
    m = kid_features_to_metric(
        torch.from_numpy(f1.astype(np.float32)),
        torch.from_numpy(f2.astype(np.float32)),
        kid_subsets=kid_subsets,
        kid_subset_size=subset_size,
        rng_seed=seed,
        verbose=False,
    )
    return m[KEY_METRIC_KID_MEAN], m[KEY_METRIC_KID_STD]


def headline(n1: int, n2: int) -> str:
    """'kid' below FID_MIN_N images in either set (FID biased), else 'fid'."""
    return "kid" if min(n1, n2) < FID_MIN_N else "fid"


# ----- real-vs-real floor


def _harmonic(n1: float, n2: float) -> float:
    return 2.0 / (1.0 / n1 + 1.0 / n2)


def real_floor(
    features,
    n_other: int | None = None,
    splits: int = FLOOR_SPLITS,
    seed: int = 0,
    kid_subsets: int = FLOOR_KID_SUBSETS,
    name: str = "real set",
) -> dict | None:
    """FID/KID between two seeded halves of one set: what sampling alone scores at this size.

    Returns None when the set has fewer than 4 images (halves of 2 are the least a covariance
    needs) or FID_MIN_N or more (then its halves are large enough that the floor is not the story).
    Keys: fid_floor / fid_floor_sd (mean, SD over `splits` halvings), kid_floor_mean /
    kid_floor_sd (same for KID's mean), floor_n1 / floor_n2 (half sizes), floor_splits,
    floor_seed, floor_exponent (alpha of FID ~ h^-alpha fitted on halves, quarters and
    eighths of the set; NaN under 8 images), and with `n_other` (the size of the set this one is
    compared with) fid_floor_at_n: the floor extrapolated to the figure's harmonic size.
    """
    f = as_features(features, name)
    n = len(f)
    if n < 4 or n >= FID_MIN_N:
        return None
    if splits < 1:
        raise CytorayError(f"floor splits={splits}: must be at least 1")
    h1 = n // 2
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(n) for _ in range(splits)]
    fids = [frechet_distance(f[p[:h1]], f[p[h1:]]) for p in perms]
    k = kid_subset_size(h1, n - h1)
    kids = [kid(f[p[:h1]], f[p[h1:]], kid_subsets, k, seed)[0] for p in perms]
    out = {
        "fid_floor": float(np.mean(fids)),
        "fid_floor_sd": float(np.std(fids, ddof=1)) if splits > 1 else float("nan"),
        "kid_floor_mean": float(np.mean(kids)),
        "kid_floor_sd": float(np.std(kids, ddof=1)) if splits > 1 else float("nan"),
        "floor_n1": h1,
        "floor_n2": n - h1,
        "floor_splits": splits,
        "floor_seed": seed,
    }
    # Exponent of the floor's decay, from the same permutations cut into smaller disjoint pairs.
    sizes, means = [_harmonic(h1, n - h1)], [out["fid_floor"]]
    for m in (h1 // 2, h1 // 4):
        if m >= 2:
            sizes.append(m)
            means.append(
                float(np.mean([frechet_distance(f[p[:m]], f[p[m : 2 * m]]) for p in perms]))
            )
    alpha = float("nan")
    if len(sizes) >= 2 and min(means) > 0:
        alpha = -float(np.polyfit(np.log(sizes), np.log(means), 1)[0])
    out["floor_exponent"] = alpha
    if n_other is not None:
        h_fig = _harmonic(n, n_other)
        out["fid_floor_at_n"] = (
            out["fid_floor"] * (sizes[0] / h_fig) ** alpha if math.isfinite(alpha) else float("nan")
        )
    return out


# ----- what to print


def _floor_text(label: str, fl: dict | None) -> str:
    if fl is None:
        return f"{label}: no floor (needs 4 to {FID_MIN_N - 1} images)"
    at = fl.get("fid_floor_at_n", float("nan"))
    at_text = f", ~{at:.1f} at this figure's n" if math.isfinite(at) else ""
    return (
        f"{label}: real-vs-real FID {fl['fid_floor']:.1f} ± {fl['fid_floor_sd']:.1f} (two "
        f"seeded halves, {fl['floor_n1']}/{fl['floor_n2']} images, {fl['floor_splits']} "
        f"splits{at_text}), KID {fl['kid_floor_mean']:.4f} ± {fl['kid_floor_sd']:.4f}"
    )


def _kid_pm(r: dict, digits: int) -> str:
    """'± sd' over the KID subsets, or a word when every subset is the whole of both sets (n=2:
    '± 0.0000' read as an exact figure; it is one draw repeated)."""
    if r["kid_subset_size"] >= max(r["n1"], r["n2"]):
        return "± n/a (every subset is the whole set: no spread to show)"
    return f"± {r['kid_std']:.{digits}f}"


KID_NO_SPREAD = (
    "KID's ± is the SD over its random subsets of min(1000, n_real, n_fake) "
    "images; where no set is larger than a subset, every subset is the whole "
    "of both sets, no spread can be estimated, and KID is shown without ±"
)


def kid_text(
    mean: float,
    std: float,
    subset_size: float | None = None,
    n1: float | None = None,
    n2: float | None = None,
    digits: int = 4,
) -> str:
    """'0.0123 ± 0.0045', or '0.0123 (no spread: 12/12 images, each subset the whole set)' where the SD over
    subsets is not an estimate (KID_NO_SPREAD): a '± 0.0000' would read as an exact figure."""
    known = subset_size is not None and n1 and n2
    if (known and subset_size >= max(n1, n2)) or (not known and not std) or not math.isfinite(std):
        why = (
            f"{int(n1)}/{int(n2)} images, each subset the whole set"
            if known
            else "the subsets all agree, no spread estimated"
        )
        return f"{mean:.{digits}f} (no spread: {why})"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def kid_text_of(metrics: Mapping[str, float], mean_key: str, digits: int = 4) -> str:
    """`kid_text` of a recorded KID, by its mean's key ('[prefix/]kid_<split>_inception_mean/<cls>', as `per_class`
    writes it): the SD, subset size and sample sizes are read from the sibling keys when recorded."""
    g = metrics.get
    fid_key = mean_key.replace("kid_", "fid_", 1).replace("_mean/", "/")
    n1, n2 = (g(fid_key.replace("_inception/", f"_inception_n_{s}/")) for s in ("real", "fake"))
    return kid_text(
        metrics[mean_key],
        g(mean_key.replace("_mean/", "_std/"), float("nan")),
        g(mean_key.replace("_mean/", "_subset_size/")),
        n1,
        n2,
        digits,
    )


def small_sample_warning(
    r: dict, labels: tuple[str, str] = ("first set", "second set"), floors: bool = True
) -> str:
    """One paragraph for a FID/KID result below FID_MIN_N images ('' otherwise): why FID is flagged,
    its floors (unless `floors=False`: printed beside it), and the sample size FID would need."""
    n1, n2 = r["n1"], r["n2"]
    if headline(n1, n2) == "fid":
        return ""
    shown = "; ".join(
        _floor_text(lab, r.get(key))
        for lab, key in zip(labels, ("floor_a", "floor_b"))
        if floors and key in r
    )
    return (
        f"FID on {n1}/{n2} images is biased by sample size: it is comparable only at equal "
        f"n and against the real-vs-real floor{' (' + shown + ')' if shown else ''}. "
        f"FID needs at least {FID_MIN_N} images per set (more than its {FEATURE_DIM} "
        "feature dimensions, TTUR; 10,000 recommended); at this n report KID "
        f"({r['kid_mean']:.4f} {_kid_pm(r, 4)}, unbiased) as the headline."
    )


def describe(r: dict, labels: tuple[str, str] = ("first set", "second set")) -> list[str]:
    """Lines for a terminal: headline first, FID flagged below FID_MIN_N, floors, protocol, warning."""
    n = f"n={r['n1']}/{r['n2']}"
    kid_line = f"KID {r['kid_mean']:.5f} {_kid_pm(r, 5)} ({n}, subsets of {r['kid_subset_size']} x {r['kid_subsets']})"
    fid_line = f"FID {r['fid']:.3f} ({n})"
    if r.get("headline", headline(r["n1"], r["n2"])) == "kid":
        lines = [
            kid_line + "  [headline]",
            fid_line + f"  [flagged: biased below {FID_MIN_N} images per set]",
        ]
    else:
        lines = [fid_line + "  [headline]", kid_line]
    for lab, key in zip(labels, ("floor_a", "floor_b")):
        if key in r:
            lines.append(_floor_text(lab, r[key]))
    lines.append(
        f"extractor {r['feature_extractor']} ({r['weights_sha1'][:12]}), "
        f"resize: {r.get('image_resize', r['resize'])}"
    )
    warning = small_sample_warning(r, labels, floors=False)  # the floors are the lines above
    if warning:
        lines.append("WARNING: " + warning)
    return lines


def per_class_notes(metrics: dict, split: str) -> list[str]:
    """One line per class (and 'all') of `per_class` output whose sets are below FID_MIN_N images:
    KID as the headline, FID flagged with its real-vs-real floor. [] when FID can lead."""
    lines = []
    prefix = names.fid(split, "")
    for key in sorted(k for k in metrics if k.startswith(prefix)):
        c = key[len(prefix) :]
        n_real, n_fake = (
            int(metrics.get(names.fid(split, c, f"n_{s}"), 0)) for s in ("real", "fake")
        )
        if not n_real or headline(n_real, n_fake) == "fid":
            continue
        g = lambda part: metrics.get(names.fid(split, c, part), float("nan"))  # noqa: E731
        line = (
            f"{split}/{c}: KID {kid_text_of(metrics, names.kid(split, c))} is the headline "
            f"(n={n_real}/{n_fake} < {FID_MIN_N}); FID {metrics[key]:.1f} is biased at this n"
        )
        if names.fid(split, c, "floor") in metrics:
            line += (
                f": real-vs-real FID {g('floor'):.1f} ± "
                f"{g('floor_sd'):.1f} (two seeded halves of the real set)"
            )
            at = g("floor_at_n")
            line += f", ~{at:.1f} at this n" if np.isfinite(at) else ""
        lines.append(line)
    return lines
