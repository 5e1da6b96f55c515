"""Synthetic-sample filtering (cytoray/classify/filter.py): each method keeps the share asked and
prefers the synthetic images near the real training features.

Most tests inject the feature extractor: an image's "features" are its first D pixel values, so
the constructed case is feature vectors placed directly (near the class's real features, or in
the other class's region). One test runs the offline Inception of metrics.fidelity on simulated
cells, as a study does."""

from __future__ import annotations

import numpy as np
import pytest

from cytoray.classify.filter import FilterConfig, FilteredSampler, n_drawn, realism_scores
from cytoray.errors import ConfigError

D, S = (
    8,
    4,
)  # feature width; constructed images are S x S x 3 = 48 values, the first D carry the features
CENTRES = {"a": 60.0, "b": 190.0}


def extract(images: np.ndarray) -> np.ndarray:
    return np.asarray(images).reshape(len(images), -1)[:, :D].astype(np.float64)


def image_of(feature: np.ndarray) -> np.ndarray:
    im = np.full(S * S * 3, 128, np.uint8)
    im[:D] = np.clip(np.round(feature), 0, 255).astype(np.uint8)
    return im.reshape(S, S, 3)


def real_features(n: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        c: extract(np.stack([image_of(m + rng.normal(0, 6, D)) for _ in range(n)]))
        for c, m in CENTRES.items()
    }


class Constructed:
    """A generator whose images alternate: even draws near its class's real features, odd draws in
    the other class's region (what a filter should drop). Masks mark each draw's index."""

    def __init__(self, with_masks: bool = False) -> None:
        self.calls: list[int] = []
        self.with_masks = with_masks

    def sample(self, n: int, cls: str, seed: int = 0):
        self.calls.append(n)
        rng = np.random.default_rng(seed)
        other = "b" if cls == "a" else "a"
        feats = [CENTRES[cls if i % 2 == 0 else other] + rng.normal(0, 6, D) for i in range(n)]
        images = np.stack([image_of(f) for f in feats])
        if not self.with_masks:
            return images
        masks = np.zeros((n, S, S), bool)
        for i in range(n):
            masks[i].flat[i % (S * S)] = True
        return images, masks


def near(images: np.ndarray, cls: str) -> np.ndarray:
    f = extract(images)
    return np.linalg.norm(f - CENTRES[cls], axis=1) < np.linalg.norm(
        f - CENTRES["b" if cls == "a" else "a"], axis=1
    )


@pytest.mark.parametrize("method", ["realism", "centroid", "classifier"])
@pytest.mark.parametrize("keep,n", [(0.5, 10), (0.75, 9), (0.4, 7)])
def test_each_filter_keeps_the_share_asked_and_prefers_images_near_the_real_ones(method, keep, n):
    gen = Constructed()
    fs = FilteredSampler(
        gen, FilterConfig(method=method, keep=keep), real_features(), extract=extract
    )
    for cls in ("a", "b"):
        out = fs.sample(n, cls, seed=3)
        assert (
            out.shape == (n, S, S, 3) and out.dtype == np.uint8
        )  # the policy's count: the ratio holds
        assert gen.calls[-1] == n_drawn(n, keep) == int(np.ceil(n / keep - 1e-9))
        drawn = gen.calls[-1]
        n_near = (drawn + 1) // 2  # even draws
        # Every kept image is a near one while there are enough of them; beyond that all near ones are kept.
        assert near(out, cls).sum() == min(n, n_near)
        rec = fs.records[cls]
        assert (
            rec.kept == n and len(rec.ranked) == drawn and np.all(np.diff(rec.scores) <= 0)
        )  # best first
    st = fs.stats()
    assert st["filter_rejected_share"] == pytest.approx(1 - 2 * n / (2 * n_drawn(n, keep)))
    assert st["filter_rejected_share/a"] == pytest.approx(1 - n / n_drawn(n, keep))


def test_a_filter_orders_by_distance_not_by_draw_order():
    """Within the near images, the nearest come first (centroid: distance to the class mean)."""
    real = real_features()
    rng = np.random.default_rng(1)
    offsets = (
        rng.permutation(np.arange(1, 9)) * 8.0
    )  # distinct distances from the centroid, shuffled
    centre = real["a"].mean(0)
    images = np.stack([image_of(centre + o) for o in offsets])

    class Fixed:
        def sample(self, n, cls, seed=0):
            return images[:n]

    fs = FilteredSampler(Fixed(), FilterConfig(method="centroid", keep=0.5), real, extract=extract)
    kept = fs.sample(4, "a")
    d = np.linalg.norm(extract(kept) - centre, axis=1)
    assert (
        np.all(np.diff(d) > 0)
        and d.max() < np.sort(np.linalg.norm(extract(images) - centre, axis=1))[4]
    )


def test_realism_score_agrees_with_precision():
    """realism keeps what precision counts as inside: score > -1 exactly for images in a real k-NN ball."""
    from cytoray.metrics.realism import prdc

    real = real_features(n=15)["a"]
    fake = extract(np.stack(Constructed().sample(30, "a", seed=5)))
    s = realism_scores(fake, real, k=5)
    assert np.mean(s > -1) == pytest.approx(prdc(real, fake, k=5)["precision"])
    assert (s[1::2] <= -1).all() and np.mean(
        s[::2] > -1
    ) > 0.5  # the other class's outside, most near ones inside
    assert s[::2].min() > s[1::2].max()  # and every near one ranks above every far one


def test_masks_follow_their_images_and_none_draws_exactly_n():
    gen = Constructed(with_masks=True)
    fs = FilteredSampler(
        gen, FilterConfig(method="centroid", keep=0.5), real_features(), extract=extract
    )
    images, masks = fs.sample(6, "a", seed=2)
    ref_images, ref_masks = Constructed(with_masks=True).sample(12, "a", seed=2)
    for im, m in zip(images, masks):
        j = next(i for i in range(12) if np.array_equal(ref_images[i], im))
        assert np.array_equal(ref_masks[j], m)
    plain = FilteredSampler(
        gen, FilterConfig(method="none", keep=0.5), real_features(), extract=extract
    )
    images, _ = plain.sample(6, "a", seed=2)
    assert (
        gen.calls[-1] == 6 and len(images) == 6 and plain.stats() == {}
    )  # nothing to rank by: keep ignored


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="filter.keep"):
        FilterConfig(method="centroid", keep=0.0).validate()
    with pytest.raises(ConfigError, match="filter.keep"):
        FilterConfig(method="centroid", keep=1.5).validate()
    with pytest.raises(ConfigError, match="at least 2 classes"):
        FilteredSampler(
            Constructed(),
            FilterConfig(method="classifier", keep=0.5),
            {"a": real_features()["a"]},
            extract=extract,
        )


def test_grid_of_best_and_worst_kept(tmp_path):
    from PIL import Image

    from cytoray.experiments.common import write_filter_grids

    fs = FilteredSampler(
        Constructed(), FilterConfig(method="realism", keep=0.5), real_features(), extract=extract
    )
    for c in ("a", "b"):
        fs.sample(8, c, seed=0)
    rows = fs.best_and_worst(k=4)
    assert set(rows["a"]) == {"best kept", "worst kept", "best rejected"} and all(
        near(rows["a"]["best kept"], "a")
    )
    assert not near(rows["a"]["best rejected"], "a").any()
    write_filter_grids(tmp_path, fs, "constructed", k=4)
    for c in ("a", "b"):
        im = Image.open(tmp_path / f"filter_{c}.png")
        assert (
            im.size[0] > 4 * 96 and im.size[1] > 3 * 96
        )  # 3 rows of 4 tiles, scaled up to readable tiles


def test_default_features_are_the_offline_inception_on_cells():
    """The study's filter (no extractor given) runs metrics.fidelity's Inception: on simulated
    cells, drawn images that are cells of the class outrank flat noise."""
    from cytoray.data.simulate import simulate
    from cytoray.metrics.fidelity import inception_features

    sim = simulate(kind="cytology", n=12, size=32, seed=0)
    cells = sim.images[sim.labels == 0]
    real = {
        "benign": inception_features(cells[:4]),
        "malignant": inception_features(sim.images[sim.labels == 1][:4]),
    }
    noise = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    pool = np.concatenate([noise[:1], cells[4:6], noise[1:]])  # noise, cell, cell, noise

    class Pool:
        def sample(self, n, cls, seed=0):
            return pool[:n]

    fs = FilteredSampler(Pool(), FilterConfig(method="centroid", keep=0.5), real)
    assert fs.extract is inception_features
    kept = fs.sample(2, "benign")
    assert {im.tobytes() for im in kept} == {im.tobytes() for im in cells[4:6]}


# ----------------------------------------------------------------------------- the baselines study's filtered policies


def test_filtered_policy_names():
    from cytoray.classify.filter import split_filtered

    assert split_filtered("trad+syncgan-filtered") == ("trad+syncgan", True)
    assert split_filtered("syncgan-only-filtered") == ("syncgan-only", True)
    assert split_filtered("orig+gan") == ("orig+gan", False)


@pytest.mark.parametrize(
    "sets,match",
    [
        (["policies=[orig,trad-filtered]"], "trad-filtered.*draws on no generator"),
        (["policies=[orig,gan-filtered]", "filter.method=none"], "filter.method=none.*-filtered"),
        (["policies=[orig,gan-filtered]", "filter.keep=0"], "filter.keep"),
    ],
)
def test_baselines_refuse_a_filter_that_cannot_run(sets, match):
    from cytoray.config import load
    from cytoray.experiments.baselines import BaselinesConfig, BaselinesStudy

    with pytest.raises(ConfigError, match=match):
        cfg = load(BaselinesConfig, None, sets)
        BaselinesStudy().check(cfg)


def test_baselines_filtered_cell_ranks_against_the_split_training_images(tmp_path, monkeypatch):
    """A '-filtered' cell: each generator's sampler behind the study's filter, scored against the
    split's real TRAINING images (features cached under the realism key), and the cell's report keys
    and figures (the filter grids beside a copy of the generator's own PNGs)."""
    import cytoray.classify.filter as F
    from cytoray.data.folder import ImageSet
    from cytoray.experiments.baselines import (
        BaselinesConfig,
        BaselineSplit,
        filter_report,
        filtered_samplers,
    )

    def features(x, batch_size=50, device="cpu"):  # the cache hands NCHW, the sampler NHWC
        x = np.asarray(x)
        return extract(x.transpose(0, 2, 3, 1) if x.shape[1] == 3 else x)

    monkeypatch.setattr(
        "cytoray.metrics.fidelity.inception_features", features
    )  # what FilteredSampler and the cache call
    real = real_features(6)
    images = np.concatenate([np.stack([image_of(f) for f in real[c]]) for c in ("a", "b")])
    train = ImageSet(
        images=images,
        labels=np.repeat([0, 1], 6),
        class_names=("a", "b"),
        names=[f"{i}.png" for i in range(12)],
        sha256=[str(i) for i in range(12)],
    )
    cfg = BaselinesConfig()
    cfg.filter = F.FilterConfig(method="centroid", keep=0.5)
    gen = Constructed()
    split = BaselineSplit(train, train, train, "h0")
    samplers = filtered_samplers(cfg, split, {"gan": gen}, tmp_path / "cache")
    assert (
        isinstance(samplers["gan"], F.FilteredSampler)
        and (tmp_path / "cache" / "features").is_dir()
    )
    for c in ("a", "b"):
        out = samplers["gan"].sample(6, c, seed=1)
        assert len(out) == 6 and gen.calls[-1] == 12 and near(out, c).all()
    gfig = tmp_path / "gen_figures"
    gfig.mkdir()
    (gfig / "real_vs_synthetic.png").write_bytes(b"the generator's figure")
    rep = filter_report(samplers, tmp_path / "cell", str(gfig), "gan-filtered (split 0)")
    assert rep["filter_rejected_share"] == pytest.approx(0.5) and rep[
        "filter_rejected_share/a"
    ] == pytest.approx(0.5)
    assert {p.name for p in (tmp_path / "cell").iterdir()} == {
        "real_vs_synthetic.png",
        "filter_a.png",
        "filter_b.png",
    }
    assert rep["figures"] == str(tmp_path / "cell")
