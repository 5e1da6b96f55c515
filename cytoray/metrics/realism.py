"""Realism, diversity and copying, told apart: precision / recall / density / coverage and memorisation.

FID/KID say how far two sets are, not why. On the same Inception pool features (float [N, 2048],
`fidelity.inception_features`), Euclidean distances, k nearest neighbours:

- precision (Kynkäänniemi et al. 2019): share of synthetic images inside the real manifold (the
  union of balls around each real image reaching its k-th nearest real neighbour): realism.
- recall (same paper): share of real images inside the synthetic manifold: diversity.
- density (Naeem et al. 2020): how many real balls hold a synthetic image, / k, averaged; ~1
  for a set drawn like the real one, > 1 where samples crowd the dense real regions.
- coverage (Naeem et al. 2020): share of real images whose ball holds a synthetic image;
  unlike recall it does not grow with outlying synthetic images.
  k = K (5), Naeem's choice; the formulas are those of their `prdc` code (strict `<`).
- memorisation: each synthetic image's nearest training image; a synthetic image is "memorised"
  when that distance is below the PERCENTILE-th (5th) percentile of the training images'
  distances to their own nearest other training image. Why the 5th: the 1st percentile of
  the 40-100 training images a class has is the single closest pair (one near-duplicate moves
  it); the 5th rests on a few pairs. A fresh image drawn like the training ones scores ~5%
  (its nearest-training distance is distributed like a training image's), more at small n
  (rank effect: ~(1 + 0.05 (n - 1)) / (n + 1), 7% at n = 45); that is the floor, measured on
  held-out real images and logged beside the share, and a copy of the training set scores 1.
  Measured on Herlev dev (Inception features at 64 px, 45 training and 30 held-out images a
  class, 200 seeded splits): held-out real images score 7.1% (normal) and 8.4% (abnormal), 95th
  percentile 20%; so a target of "at most 1%" cannot be met by real images themselves: compare
  a generator with the held-out real value beside it.

Every figure comes with its real-vs-real value at the same size: a held-out real set (train
images against the validation reference, at the synthetic set's size) when there is one, else
two seeded halves of the real set (as `fidelity_stats.real_floor`). Below k + 1 images in a set,
k is lowered to n - 1 and the k used is recorded with the figures.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .names import realism

K = 5  # nearest neighbours for the manifolds (Naeem et al. 2020's recommendation)
# train-to-train nearest-neighbour distance percentile below which a sample counts as memorised
PERCENTILE = 5.0
FLOOR_SPLITS = 10  # seeded draws averaged per real-vs-real value
# Default flag threshold (Herlev dev, 45 train / 30 per class, 200 splits):
# held-out real images pass 0.20 in 4% of splits (0.15: 14-16%, too many
# false alarms); a generator copying 20% of its images passes it in 77-81%.
MEMORISED_MAX = 0.2
PRDC = ("precision", "recall", "density", "coverage")


def _features(f, name: str) -> np.ndarray:
    a = np.asarray(f, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2 or not np.isfinite(a).all():
        raise DataError(f"{name}: features of shape {a.shape} are not finite [N >= 2, D] features")
    return a


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] (Gram form in float64, clipped at 0)."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def nn_radii(f: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row."""
    d = distances(f, f)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def usable_k(k: int, n_real: int, n_fake: int) -> int:
    """k, lowered to n - 1 of the smaller set (at least 1)."""
    if k < 1:
        raise DataError(f"k={k}: give at least 1 nearest neighbour")
    return max(1, min(k, n_real - 1, n_fake - 1))


def prdc(real, fake, k: int = K) -> dict[str, float]:
    """Precision, recall, density, coverage of `fake` against `real` (feature arrays), and the k used."""
    r, f = _features(real, "real"), _features(fake, "synthetic")
    if r.shape[1] != f.shape[1]:
        raise DataError(
            f"real and synthetic features differ in width ({r.shape[1]} vs {f.shape[1]})"
        )
    k = usable_k(k, len(r), len(f))
    r_rad, f_rad = nn_radii(r, k), nn_radii(f, k)
    d = distances(r, f)  # [n_real, n_fake]
    inside = d < r_rad[:, None]  # synthetic j in real ball i
    return {
        "precision": float(inside.any(0).mean()),
        "recall": float((d < f_rad[None, :]).any(1).mean()),
        "density": float(inside.sum(0).mean() / k),
        "coverage": float((d.min(1) < r_rad).mean()),
        "k": float(k),
    }


def prdc_floor(
    real, n_fake: int, k: int = K, held_out=None, splits: int = FLOOR_SPLITS, seed: int = 0
) -> dict | None:
    """Real-vs-real value of each figure: `held_out` real images (min(n_fake, all) per seeded draw)
    scored against `real` as if synthetic; without them, one seeded half against the other.
    Keys: precision... coverage (means over draws), k, floor_n_ref, floor_n_other, floor_kind.
    None when the real set is too small to halve (< 4 images) and nothing is held out."""
    r = _features(real, "real")
    rng = np.random.default_rng(seed)
    if held_out is not None and len(held_out) >= 2:
        h = _features(held_out, "held-out real")
        m = min(n_fake, len(h))
        draws = [(r, h[rng.permutation(len(h))[:m]]) for _ in range(1 if m == len(h) else splits)]
        kind = "held-out real images"
    elif len(r) >= 4:
        perms = [rng.permutation(len(r)) for _ in range(splits)]
        draws = [(r[p[: len(r) // 2]], r[p[len(r) // 2 :]]) for p in perms]
        kind = "two seeded halves of the real set"
    else:
        return None
    vals = [prdc(a, b, k) for a, b in draws]
    out = {name: float(np.mean([v[name] for v in vals])) for name in (*PRDC, "k")}
    out.update(floor_n_ref=len(draws[0][0]), floor_n_other=len(draws[0][1]), floor_kind=kind)
    return out


def memorisation(fake, train, percentile: float = PERCENTILE, pairs: int = 8) -> dict:
    """Each synthetic image's nearest training image, and the share nearer than the `percentile`-th
    percentile of train-to-train nearest-neighbour distances. Returns share, threshold, percentile,
    nearest (index into train per synthetic image), distance (per synthetic image), and `pairs`
    closest (synthetic index, train index, distance), closest first."""
    f, t = _features(fake, "synthetic"), _features(train, "training")
    if not 0 < percentile < 100:
        raise DataError(f"percentile={percentile}: give a percentile between 0 and 100")
    threshold = float(np.percentile(nn_radii(t, 1), percentile))
    d = distances(f, t)
    nearest = d.argmin(1)
    dist = d[np.arange(len(f)), nearest]
    order = np.argsort(dist, kind="stable")[:pairs]
    return {
        "share": float((dist < threshold).mean()),
        "threshold": threshold,
        "percentile": float(percentile),
        "nearest": nearest,
        "distance": dist,
        "pairs": [(int(i), int(nearest[i]), float(dist[i])) for i in order],
    }


def memorised_share(f, threshold: float, train) -> float:
    """Share of `f` nearer to a training image than `threshold` (for the held-out real floor)."""
    return float(
        (
            distances(_features(f, "held-out"), _features(train, "training")).min(1) < threshold
        ).mean()
    )


# ----- per class, in the study's metric names


def names(split: str) -> dict[str, str]:
    """Metric name templates ('{c}' = class or 'all'), in the FID/KID protocol style."""
    c = "{c}"
    n = {m: realism(m, split, c) for m in PRDC}
    n.update({f"{m}_floor": realism(m, split, c, "floor") for m in PRDC})
    n.update(
        k=realism("prdc", split, c, "k"),
        memorised=realism("memorised_share", split, c),
        memorised_floor=realism("memorised_share", split, c, "floor"),
        threshold=realism("memorised_threshold", split, c),
        percentile=realism("memorised_percentile", split, c),
    )
    return n


def per_class(
    real: dict,
    fake: dict,
    split: str,
    train: dict | None = None,
    k: int = K,
    percentile: float = PERCENTILE,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, list]]:
    """PRDC (with real-vs-real floors) and, with `train` features, memorisation, per class and pooled.

    `real`, `fake`, `train`: {class: features}. The floor's held-out set is the class's training
    images (drawn at the synthetic set's size) when given, else halves of `real`. Returns
    (metrics, closest pairs {class: [(synthetic index, train index, distance)]}).
    """
    n, out, pairs, judged = names(split), {}, {}, []
    for c in sorted(fake):
        t = None if train is None else train.get(c)
        _prdc_into(out, n, c, real[c], fake[c], k, t, seed)
        if t is not None and len(t) >= 2:
            m = memorisation(fake[c], t, percentile)
            out[n["memorised"].format(c=c)], out[n["threshold"].format(c=c)] = (
                m["share"],
                m["threshold"],
            )
            out[n["percentile"].format(c=c)] = m["percentile"]
            out[n["memorised_floor"].format(c=c)] = floor = memorised_share(
                real[c], m["threshold"], t
            )
            pairs[c] = m["pairs"]
            judged.append((m["distance"] < m["threshold"], floor, len(real[c])))
    if len(fake) > 1:
        cs = sorted(fake)
        pool = lambda d: np.concatenate([np.asarray(d[c]) for c in cs])  # noqa: E731
        t_all = pool(train) if train is not None and all(c in train for c in cs) else None
        _prdc_into(out, n, "all", pool(real), pool(fake), k, t_all, seed)
    if judged:  # pooled share: every synthetic image judged against its own class's training images
        out[n["memorised"].format(c="all")] = float(np.concatenate([j[0] for j in judged]).mean())
        out[n["memorised_floor"].format(c="all")] = float(
            sum(j[1] * j[2] for j in judged) / sum(j[2] for j in judged)
        )
    return out, pairs


def _prdc_into(out: dict, n: dict, c: str, real, fake, k: int, held_out, seed: int) -> None:
    v = prdc(real, fake, k)
    for m in PRDC:
        out[n[m].format(c=c)] = v[m]
    out[n["k"].format(c=c)] = v["k"]
    fl = prdc_floor(real, len(fake), k, held_out, seed=seed)
    if fl is not None:
        for m in PRDC:
            out[n[f"{m}_floor"].format(c=c)] = fl[m]


def pair_report(
    real, fake, train=None, k: int = K, percentile: float = PERCENTILE, seed: int = 0
) -> dict:
    """One real set against one synthetic set (`cytoray fid --realism`): PRDC, its real-vs-real
    floor (halves of `real`), and with `train` the memorisation share, its held-out floor (`real`
    against `train`) and the closest pairs (plain lists: JSON-ready)."""
    out = {"prdc": prdc(real, fake, k), "prdc_floor": prdc_floor(real, len(fake), k, seed=seed)}
    if train is not None:
        m = memorisation(fake, train, percentile)
        out["memorisation"] = {
            "share": m["share"],
            "threshold": m["threshold"],
            "percentile": m["percentile"],
            "held_out_real_share": memorised_share(real, m["threshold"], train),
            "n_train": len(train),
            "closest_pairs": m["pairs"],
        }
    return out


def flagged(metrics: dict, split: str, threshold: float) -> dict[str, float]:
    """{class: share} of classes (not 'all') whose memorised share exceeds `threshold`."""
    prefix = realism("memorised_share", split, "")
    return {
        k[len(prefix) :]: v
        for k, v in metrics.items()
        if k.startswith(prefix) and not k.endswith("/all") and v > threshold
    }


def describe(metrics: dict, split: str) -> list[str]:
    """Terminal lines, one per class: P/R/D/C with their real-vs-real values, memorisation share."""
    n, lines = names(split), []
    classes = sorted(
        {k.split("/", 1)[1] for k in metrics if k.startswith(realism("precision", split, ""))}
    )
    for c in classes:
        g = lambda key: metrics.get(n[key].format(c=c), float("nan"))  # noqa: E731
        parts = [f"{m} {g(m):.3f} (real-vs-real {g(m + '_floor'):.3f})" for m in PRDC]
        line = f"{c}: " + ", ".join(parts) + f"; k={int(g('k'))}"
        if n["memorised"].format(c=c) in metrics:
            line += (
                f"; memorised share {g('memorised'):.3f} (held-out "
                f"real {g('memorised_floor'):.3f}; nearer than the "
                f"{g('percentile') if c != 'all' else PERCENTILE:g}th "
                "percentile of train-to-train distances)"
            )
        lines.append(line)
    return lines
