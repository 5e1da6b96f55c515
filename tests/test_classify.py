"""Classifiers and training-set policies: composition counts, aliases, errors, paired
augmentation, size checks before training, and a tiny Ray Train run with its cache."""

from __future__ import annotations

import dataclasses
import hashlib
import time

import numpy as np
import pytest
import torch

from cytoray.classify import (
    AugmentConfig,
    ClassifierConfig,
    augment_batch,
    augment_pair,
    compose_training_set,
    generators_needed,
    parse_policy,
    traditional_copies,
)
from cytoray.data.folder import ImageSet
from cytoray.errors import ConfigError, CytorayError

S = 32
CLASS_VALUE = {"benign": 40, "malignant": 200}  # fake samplers paint each class its own grey


class FakeSampler:
    """A stand-in for a trained generator: class-coded noise images, seeded, calls recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int]] = []

    def sample(self, n: int, cls: str, seed: int = 0):
        self.calls.append((n, cls, seed))
        rng = np.random.default_rng(seed)
        imgs = np.full((n, S, S, 3), CLASS_VALUE[cls], np.uint8)
        imgs[:, 0, :] = rng.integers(0, 255, (n, S, 3), dtype=np.uint8)  # distinct images
        return imgs, None


def real_set(per_class: int = 6, masks: bool = False) -> ImageSet:
    rng = np.random.default_rng(0)
    n = 2 * per_class
    images = rng.integers(0, 255, (n, S, S, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(2), per_class).astype(np.int64)
    names = [f"{('benign', 'malignant')[c]}/r{i:02d}" for i, c in enumerate(labels)]
    return ImageSet(
        images,
        labels,
        ("benign", "malignant"),
        names,
        [hashlib.sha256(im.tobytes()).hexdigest() for im in images],
        masks=rng.random((n, S, S)) > 0.5 if masks else None,
        source="test",
    )


def by_kind(ds: ImageSet, cls: int) -> dict[str, int]:
    kinds = [
        "synth" if n.startswith("synth:") else "trad" if n.startswith("trad:") else "real"
        for n in ds.names
    ]
    out = {"real": 0, "trad": 0, "synth": 0}
    for k, lab in zip(kinds, ds.labels):
        out[k] += int(lab == cls)
    return out


# ----------------------------------------------------------------------------- policies


@pytest.mark.parametrize("ratio,k", [(2.0, 12), (0.5, 3)])
def test_policy_counts_per_class(ratio, k):
    real, samplers = real_set(6), {"syncgan": FakeSampler(), "gan": FakeSampler()}
    expect = {
        "orig": (6, 0, 0),
        "trad": (6, k, 0),
        "syncgan": (6, 0, k),
        "trad+syncgan": (6, k, k),
        "syncgan-only": (0, 0, k),
        "gan": (0, 0, k),
        "orig+gan": (6, 0, k),
    }
    for policy, (n_real, n_trad, n_synth) in expect.items():
        ds = compose_training_set(policy, real, ratio, samplers, rng_seed=0)
        for c in (0, 1):
            assert by_kind(ds, c) == {"real": n_real, "trad": n_trad, "synth": n_synth}, (policy, c)
        assert len(ds.sha256) == len(ds) == len(ds.names) and ds.class_names == real.class_names
    # synthetic images carry their class's label (the fake sampler paints the class grey)
    ds = compose_training_set("syncgan-only", real, ratio, samplers, rng_seed=0)
    for img, lab, name in zip(ds.images, ds.labels, ds.names):
        cls = ds.class_names[lab]
        assert img[5, 5, 0] == CLASS_VALUE[cls] and name.startswith(f"synth:syncgan/{cls}/")
    assert len(set(ds.names)) == len(ds)


def test_policy_is_seeded_and_trad_copies_keep_masks():
    real = real_set(5, masks=True)
    a = compose_training_set("trad", real, 2.0, {}, rng_seed=3)
    b = compose_training_set("trad", real, 2.0, {}, rng_seed=3)
    c = compose_training_set("trad", real, 2.0, {}, rng_seed=4)
    assert (
        np.array_equal(a.images, b.images)
        and a.names == b.names
        and not np.array_equal(a.images, c.images)
    )
    assert a.masks is not None and a.masks.shape == (30, S, S)
    # every real image is copied floor(10/5)=2 times; names point at their source
    assert sum(n.startswith("trad:benign/r00/") for n in a.names) == 2
    # a policy that draws maskless synthetic images drops masks instead of misaligning them
    assert (
        compose_training_set("trad+syncgan", real, 1.0, {"syncgan": FakeSampler()}, 0).masks is None
    )


def test_policy_aliases_and_generic_parsing():
    assert parse_policy("orig+prop") == parse_policy("syncgan") == parse_policy("Orig + SynCGAN")
    assert parse_policy("prop") == parse_policy("syncgan-only")
    assert parse_policy("gan-only") == parse_policy("gan")
    assert parse_policy("orig+trad").name == "trad" and parse_policy("real").name == "orig"
    assert parse_policy("orig+trad+prop").sources == ("orig", "trad", "syncgan")
    assert parse_policy("trad+gan").sources == ("orig", "trad", "gan")  # trad always brings orig
    only = parse_policy("trad-only")
    assert only.sources == ("trad",) and parse_policy(only.name) == only
    assert parse_policy("gan+orig").name == "orig+gan"


def test_unknown_policy_lists_valid_names():
    with pytest.raises(CytorayError) as e:
        parse_policy("orig+nosuchgan")
    msg = str(e.value)
    assert (
        "'nosuchgan'" in msg
        and "syncgan-only" in msg
        and "trad+syncgan" in msg
        and "gan, syncgan" in msg
    )
    with pytest.raises(CytorayError, match="twice"):
        parse_policy("orig+gan+gan")


def test_negative_ratio_and_empty_set_are_errors():
    with pytest.raises(CytorayError, match="ratio=-1"):
        compose_training_set("syncgan", real_set(), -1.0, {"syncgan": FakeSampler()}, 0)
    with pytest.raises(CytorayError, match="empty training set"):
        compose_training_set("syncgan-only", real_set(), 0.0, {"syncgan": FakeSampler()}, 0)


def test_missing_sampler_named_before_any_sampling():
    s = FakeSampler()
    with pytest.raises(CytorayError, match="needs generator 'gan'.*have: syncgan"):
        compose_training_set("orig+gan+syncgan", real_set(), 2.0, {"syncgan": s}, 0)
    assert s.calls == []


def test_generators_needed():
    assert generators_needed(
        ["orig", "trad", "syncgan", "trad+syncgan", "syncgan-only", "gan", "orig+gan"]
    ) == {
        "syncgan",
        "gan",
    }
    assert generators_needed("trad") == set()


# ----------------------------------------------------------------------------- augmentation


def _blob_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric mask and an image whose red channel is that mask: geometry must agree."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((S, S), bool)
    mask[4:12, 3:20] = True
    mask[rng.integers(14, 28), rng.integers(0, 28) :] = True
    img = np.zeros((S, S, 3), np.uint8)
    img[..., 0] = mask * 255
    img[..., 1] = np.arange(S, dtype=np.uint8)[None, :] * 7  # a gradient so flips are visible
    return img, mask


def test_paired_augmentation_keeps_geometry_in_sync():
    exact = AugmentConfig(max_angle=0.0, noise_std=0.0)
    small = AugmentConfig(max_angle=20.0, noise_std=0.0)
    rng = np.random.default_rng(0)
    changed = 0
    for i in range(12):
        img, mask = _blob_pair(i)
        out = augment_pair({"image": img, "mask": mask, "id": i}, rng, exact)
        assert out["id"] == i and out["mask"].dtype == bool
        assert np.array_equal(
            out["image"][..., 0] > 127, out["mask"]
        )  # flips and quarter turns: exact
        changed += not np.array_equal(out["mask"], mask)
        out = augment_pair({"image": img, "mask": mask}, rng, small)
        assert (
            (out["image"][..., 0] > 127) == out["mask"]
        ).mean() > 0.97  # bilinear vs nearest at edges
    assert changed >= 8  # the transforms really move pixels


def test_traditional_copies_are_seeded_and_noise_has_its_std():
    imgs = np.stack([_blob_pair(i)[0] for i in range(4)])
    masks = np.stack([_blob_pair(i)[1] for i in range(4)])
    a, am, src = traditional_copies(
        imgs, np.random.default_rng(7), n_total=10, masks=masks, cfg=AugmentConfig(noise_std=0)
    )
    b, bm, src_b = traditional_copies(
        imgs, np.random.default_rng(7), n_total=10, masks=masks, cfg=AugmentConfig(noise_std=0)
    )
    assert np.array_equal(a, b) and np.array_equal(am, bm) and np.array_equal(src, src_b)
    assert sorted(np.bincount(src, minlength=4).tolist()) == [2, 2, 3, 3]
    assert ((a[..., 0] > 127) == am).mean() > 0.97
    flat = np.full((50, S, S, 3), 128, np.uint8)
    noise_only = AugmentConfig(hflip=0, vflip=0, rot90=False, max_angle=0, noise_std=0.05)
    n, _, _ = traditional_copies(flat, np.random.default_rng(0), n_per_image=1, cfg=noise_only)
    assert abs(n.astype(float).std() - 0.05 * 255) < 0.5 and abs(n.mean() - 128) < 0.5


def test_online_batch_augmentation_pairs_and_seeds():
    pairs = [_blob_pair(i) for i in range(8)]
    x = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 255
    m = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None].float()
    cfg = AugmentConfig(max_angle=0.0, noise_std=0.0)
    xa, ma = augment_batch(x, torch.Generator().manual_seed(1), cfg, mask=m)
    assert torch.equal(xa[:, :1] > 0.5, ma > 0.5) and not torch.equal(ma, m)
    # flips and quarter turns on the sampling grid are exact: each output is one of the 8 symmetries
    for xi, ai in zip(x, xa):
        cands = [torch.rot90(f, k, (1, 2)) for f in (xi, xi.flip(2)) for k in range(4)]
        assert min((c - ai).abs().max().item() for c in cands) < 1e-4
    noisy = AugmentConfig()
    a = augment_batch(x, torch.Generator().manual_seed(5), noisy)
    b = augment_batch(x, torch.Generator().manual_seed(5), noisy)
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1


# ----------------------------------------------------------------------------- config


def test_classifier_config_rejects_sizes_before_training(tmp_path):
    from cytoray.classify.train import train_classifier
    from cytoray.config import from_dict
    from cytoray.training.config import RunConfig

    with pytest.raises(ConfigError, match="inception_v3.*at least 75"):
        from_dict(ClassifierConfig, {"name": "inception_v3", "image_size": 64}, "clf.yaml")
    assert (
        from_dict(ClassifierConfig, {"name": "inception_v3", "image_size": 96}).check_size(32) == 96
    )
    with pytest.raises(ConfigError, match="unknown key 'lr_g'"):
        from_dict(ClassifierConfig, {"lr_g": 1.0})
    with pytest.raises(ConfigError, match="weights_path"):
        from_dict(ClassifierConfig, {"weights_path": str(tmp_path / "missing.pth")})
    real = real_set(4)
    with pytest.raises(ConfigError, match="inception_v3.*75 px.*32"):
        train_classifier(
            real,
            real,
            real,
            ClassifierConfig(name="inception_v3"),
            label="x",
            cache_root=tmp_path / "c",
            data_key="k",
            run_cfg=RunConfig(storage_path=str(tmp_path / "ray")),
            seed=0,
        )
    assert not (tmp_path / "c").exists() and not (tmp_path / "ray").exists()  # nothing started
    assert ClassifierConfig().weights_tag() == "scratch"
    w = tmp_path / "w.pth"
    w.write_bytes(b"x")
    assert ClassifierConfig(weights_path=str(w)).weights_tag() == f"imagenet:{w.resolve()}"


# ----------------------------------------------------------------------------- Ray Train run


def test_train_classifier_end_to_end_and_cache(tmp_path):
    from cytoray.classify.train import predict_proba, selection_metrics, to_input, train_classifier
    from cytoray.data.source import simulated_set
    from cytoray.data.splits import make_manifest
    from cytoray.nets.classifiers import build_classifier
    from cytoray.training.config import RunConfig

    ds = simulated_set("cytology", 40, S, seed=0)
    man, _ = make_manifest(ds, [3, 1, 1], seed=0)
    train, val, test = (ds.subset(man.indices(s)) for s in ("train", "val", "test"))
    cfg = ClassifierConfig(name="smallcnn", epochs=3, batch_size=8, lr=3e-3)
    kw = dict(
        label="orig-smallcnn",
        cache_root=tmp_path / "cache",
        data_key=man.hash,
        run_cfg=RunConfig(storage_path=str(tmp_path / "ray")),
        seed=0,
    )
    res = train_classifier(train, val, test, cfg, **kw)

    assert res.test_prob.shape == (len(test), 2) and np.allclose(res.test_prob.sum(1), 1, atol=1e-5)
    assert np.array_equal(res.test_labels, test.labels) and res.test_names == test.names
    assert len(res.history) == 3 and 0 <= res.best_epoch < 3 and not res.cached
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0], losses
    best = res.history[res.best_epoch]
    assert res.val_metrics["balanced_accuracy"] == pytest.approx(best["val_balanced_accuracy"])
    assert all(
        h["val_balanced_accuracy"] <= best["val_balanced_accuracy"] + 1e-9 for h in res.history
    )
    assert res.params["weights"] == "scratch" and res.params["n_train"] == len(train)
    # the stored test probabilities are the best-on-validation model's
    model = build_classifier("smallcnn", 2, S)
    model.load_state_dict(res.model_state)
    prob = predict_proba(model, to_input(test.images, S, torch.device("cpu")), 64)
    assert np.allclose(prob, res.test_prob, atol=1e-5)
    m = selection_metrics(res.test_prob, test.labels)
    assert 0.0 <= m["balanced_accuracy"] <= 1.0 and m["loss"] > 0

    t0 = time.perf_counter()
    again = train_classifier(train, val, test, cfg, **kw)
    assert again.cached and time.perf_counter() - t0 < 10
    assert np.array_equal(again.test_prob, res.test_prob) and again.best_epoch == res.best_epoch
    # a different training-set composition is a different cell
    other = dataclasses.replace(train, names=[f"x/{n}" for n in train.names])
    from cytoray.classify.policies import set_key

    assert set_key(other) != set_key(train)
