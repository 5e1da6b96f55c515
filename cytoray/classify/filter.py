"""Synthetic-sample filtering: keep the synthetic images nearest the real training images.

The gains the literature reports from synthetic images on small cytology/histology sets come
with a selection of them (feature-centroid distance, Xue et al. 2019: 66.3 -> 71.7%; HistoGAN's
selective augmentation, +6.7 points). A `FilteredSampler` sits between a trained generator and
`compose_training_set`: asked for n images of a class it draws ceil(n / keep), scores each on
Inception pool features (the offline extractor of `metrics.fidelity`, the same features FID/KID
and precision use) against the REAL TRAINING images of that class, and returns the best n, so
the synthetic:real ratio of the policy holds whatever the share kept. Methods (higher = better):

- `realism`: as precision is computed (`metrics.realism`, Kynkäänniemi et al. 2019): a synthetic
  image lies inside the real manifold when it is nearer some real image than that image's k-th
  nearest real neighbour. Its score is -min_i d(x, r_i) / radius_i: < 1 in magnitude means inside,
  and the ranking orders images by how deep inside (or how far outside) they are.
- `centroid`: -distance to the class centroid of the real features (Xue et al. 2019).
- `classifier`: the probability of the intended class from a classifier trained on the real
  training split. A cheap one on purpose: L2-regularised logistic regression on the standardised
  Inception features (scikit-learn), fitted once per split in the trial; a CNN would cost a second
  classifier training per trial.

The validation and test splits are never seen by a filter. `method: none` draws exactly n and
ignores `keep` (there is nothing to rank by). The feature extractor can be injected (`extract`),
so the ranking logic is tested on constructed feature vectors without Inception.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import numpy as np

from ..config import ConfigError

METHODS = ("none", "realism", "centroid", "classifier")
# a baselines policy's suffix: its synthetic images go through the study's `filter`
FILTERED = "-filtered"


def split_filtered(policy: str) -> tuple[str, bool]:
    """('trad+syncgan', True) for 'trad+syncgan-filtered'; a policy without the suffix unchanged."""
    p = policy.strip()
    return (p[: -len(FILTERED)], True) if p.lower().endswith(FILTERED) else (p, False)


@dataclasses.dataclass
class FilterConfig:
    # how synthetic images are ranked; none = all kept
    method: Literal["none", "realism", "centroid", "classifier"] = "none"
    # share of drawn synthetic images kept (0, 1]: ceil(n / keep) drawn, the best n kept
    keep: float = 1.0
    # realism: k-th nearest real neighbour as each real image's radius (precision's k, Naeem et al.)
    k: int = 5

    def validate(self) -> None:
        if not (0.0 < self.keep <= 1.0) or not math.isfinite(self.keep):
            raise ConfigError(
                f"filter.keep={self.keep}: the share of synthetic images kept must be in (0, 1]"
            )
        if self.k < 1:
            raise ConfigError(f"filter.k={self.k}: give at least 1 nearest neighbour")

    @property
    def active(self) -> bool:
        return self.method != "none"


def n_drawn(n: int, keep: float) -> int:
    """Images to draw so that keeping a `keep` share leaves n (float noise does not add one)."""
    return int(math.ceil(n / keep - 1e-9)) if n else 0


# ----------------------------------------------------------------------------- scores


def realism_scores(fake: np.ndarray, real: np.ndarray, k: int) -> np.ndarray:
    """-min_i d(fake_j, real_i) / radius_i, radius_i the distance of real_i to its k-th nearest real
    neighbour (k lowered to n_real - 1): > -1 exactly when precision counts fake_j as inside."""
    from ..metrics.realism import distances, nn_radii

    real = np.asarray(real, np.float64)
    if len(real) < 2:
        raise ConfigError(
            "filter.method=realism needs at least 2 real training images per class; use centroid"
        )
    radii = np.maximum(nn_radii(real, max(1, min(k, len(real) - 1))), 1e-12)
    return -(distances(real, np.asarray(fake, np.float64)) / radii[:, None]).min(0)


def centroid_scores(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """-Euclidean distance to the centroid of the class's real features (Xue et al. 2019)."""
    c = np.asarray(real, np.float64).mean(0)
    return -np.linalg.norm(np.asarray(fake, np.float64) - c, axis=1)


def fit_real_classifier(real: dict[str, np.ndarray], seed: int = 0):
    """Logistic regression on the standardised real training features of every class (see module doc)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = list(real)
    if len(names) < 2 or any(len(v) < 1 for v in real.values()):
        raise ConfigError(
            "filter.method=classifier needs real training images of at least 2 classes"
        )
    x = np.concatenate([np.asarray(real[c], np.float64) for c in names])
    y = np.concatenate([np.full(len(real[c]), i) for i, c in enumerate(names)])
    return make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    ).fit(x, y)


def scores(
    method: str, fake: np.ndarray, real: dict[str, np.ndarray], cls: str, k: int = 5, model=None
) -> np.ndarray:
    """Each synthetic image's score for class `cls` (higher = nearer the real training images)."""
    if method == "realism":
        return realism_scores(fake, real[cls], k)
    if method == "centroid":
        return centroid_scores(fake, real[cls])
    if method == "classifier":
        model = model if model is not None else fit_real_classifier(real)
        return model.predict_proba(np.asarray(fake, np.float64))[:, list(real).index(cls)]
    raise ConfigError(f"filter.method={method!r}: not one of {', '.join(METHODS)}")


# ----------------------------------------------------------------------------- the sampler


@dataclasses.dataclass
class ClassRecord:
    """What the filter did for one class: images in rank order (best first), how many it kept."""

    ranked: np.ndarray  # uint8 [drawn, H, W, 3], best first
    scores: np.ndarray  # [drawn], best first
    kept: int
    inside: float | None = None  # realism: share of the kept images inside the real manifold


class FilteredSampler:
    """A trained generator's sampler with the filter in front: `sample(n, cls, seed)` draws
    `n_drawn(n, keep)` images and returns the n best (same return shape as the wrapped sampler:
    images, or (images, masks)). `real` maps every class to its real training features;
    `extract` turns uint8 images into features (default: the offline Inception of metrics.fidelity)."""

    def __init__(
        self,
        sampler,
        cfg: FilterConfig,
        real: dict[str, np.ndarray],
        extract: Callable[[np.ndarray], np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        cfg.validate()
        self.sampler, self.cfg, self.real = (
            sampler,
            cfg,
            {c: np.asarray(f, np.float64) for c, f in real.items()},
        )
        if extract is None:
            from ..metrics.fidelity import inception_features as extract
        self.extract, self.seed = extract, seed
        self.records: dict[str, ClassRecord] = {}
        self._model = fit_real_classifier(self.real, seed) if cfg.method == "classifier" else None

    def sample(self, n: int, cls: str, seed: int = 0):
        if not self.cfg.active:
            return self.sampler.sample(n, cls, seed=seed)
        m = n_drawn(n, self.cfg.keep)
        out = self.sampler.sample(m, cls, seed=seed)
        images, masks = out if isinstance(out, tuple) else (out, None)
        images = np.asarray(images)
        s = scores(self.cfg.method, self.extract(images), self.real, cls, self.cfg.k, self._model)
        order = np.argsort(-s, kind="stable")  # best first; ties keep the generator's order
        keep = order[:n]
        inside = float(np.mean(s[keep] > -1.0)) if self.cfg.method == "realism" and n else None
        self.records[cls] = ClassRecord(images[order], s[order], n, inside)
        return (
            (images[keep], None if masks is None else np.asarray(masks)[keep])
            if isinstance(out, tuple)
            else images[keep]
        )

    def stats(self) -> dict[str, float]:
        """Report keys: the rejected share overall and per class (and, for realism, the kept share
        inside the real manifold)."""
        if not self.records:
            return {}
        drawn = sum(len(r.ranked) for r in self.records.values())
        kept = sum(r.kept for r in self.records.values())
        out = {
            "filter_rejected_share": 1.0 - kept / drawn if drawn else 0.0,
            "filter_drawn": float(drawn),
        }
        for c, r in self.records.items():
            out[f"filter_rejected_share/{c}"] = (
                1.0 - r.kept / len(r.ranked) if len(r.ranked) else 0.0
            )
            if r.inside is not None:
                out[f"filter_kept_inside_share/{c}"] = r.inside
        return out

    def best_and_worst(self, k: int = 8) -> dict[str, dict[str, np.ndarray]]:
        """Per class: the k best kept, the k worst kept and the k best rejected images (rank order)."""
        out = {}
        for c, r in self.records.items():
            kept, rejected = r.ranked[: r.kept], r.ranked[r.kept :]
            rows = {"best kept": kept[:k], "worst kept": kept[-k:][::-1]}
            if len(rejected):
                rows["best rejected"] = rejected[:k]
            out[c] = rows
        return out
