"""The diffusion generator: label maps in, classifier-free guidance, the denoiser learning, SynCGAN's
mask GAN stages shared, the ratio study searching it by name, and a run under Ray Train."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from cytoray.errors import ConfigError
from cytoray.generators.diffusion import (
    DenoiserConfig,
    DenoiserStage,
    Diffusion,
    DiffusionConfig,
    ddim_sample,
    label_count,
    one_hot,
)
from cytoray.training.stage import amp_context

ROOT = Path(__file__).resolve().parents[1]
TINY_UNET = dict(channels=[8, 16], attention=[False, True], norm_groups=4, head_channels=8)
AMP = amp_context(torch.device("cpu"), False)


def test_label_maps_of_either_kind_become_one_hot_channels():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 1:3, 1:3] = True
    maps = np.array([[[0, 1], [2, 1]]], np.uint8)
    assert (
        label_count(masks) == 2
        and label_count(maps) == 3
        and label_count(np.zeros((1, 2, 2), np.uint8)) == 2
    )
    oh = one_hot(masks, 2)
    assert oh.shape == (2, 2, 4, 4) and set(oh.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(oh.argmax(1), torch.as_tensor(masks).long()) and torch.equal(
        one_hot(torch.as_tensor(maps), 3).argmax(1), torch.as_tensor(maps).long()
    )


def test_config_file_and_checks():
    from cytoray.config import load

    assert (
        load(DiffusionConfig, ROOT / "configs/models/diffusion.yaml") == DiffusionConfig()
    )  # the YAML documents the defaults
    for bad, match in [
        ({"attention": [True]}, "one per level"),
        ({"channels": [12, 24], "attention": [False, False]}, "multiple of norm_groups"),
        ({"schedule": "exp"}, "use one of"),
        ({"cond_drop": 1.0}, r"\[0, 1\)"),
    ]:
        with pytest.raises(ConfigError, match=match):
            DenoiserConfig(**bad).validate()


class ClassConstant(nn.Module):
    """A stand-in denoiser: predicts `value[class]` everywhere and counts the images it saw."""

    def __init__(self, value: dict[int, float]) -> None:
        super().__init__()
        self.value, self.calls = value, []

    def forward(self, x, t, class_labels):
        self.calls.append(len(x))
        v = torch.tensor([self.value[int(c)] for c in class_labels]).view(-1, 1, 1, 1)
        return v.expand(len(x), 3, *x.shape[2:]).clone()


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_guidance_mixes_conditional_and_unconditional_predictions(prediction):
    sched = dict(num_train_timesteps=100, schedule="cosine", prediction_type=prediction)
    cond, cls, null = one_hot(np.zeros((2, 8, 8), bool), 2), torch.tensor([0, 0]), 2
    guided = ClassConstant({0: 0.3, null: -0.1})
    x = ddim_sample(guided, sched, cond, cls, null, 4, 3.0, 0.0, torch.Generator().manual_seed(1))
    assert guided.calls == [4] * 4  # conditional and unconditional together: one pass of 2B a step
    mixed = ClassConstant({0: -0.1 + 3.0 * (0.3 - -0.1)})  # ε_u + w (ε_c − ε_u)
    y = ddim_sample(mixed, sched, cond, cls, null, 4, 1.0, 0.0, torch.Generator().manual_seed(1))
    assert mixed.calls == [2] * 4 and torch.allclose(
        x, y, atol=1e-5
    )  # w = 1: the conditional pass alone
    plain = ddim_sample(
        ClassConstant({0: 0.3}),
        sched,
        cond,
        cls,
        null,
        4,
        1.0,
        0.0,
        torch.Generator().manual_seed(1),
    )
    assert not torch.allclose(plain, x, atol=1e-3)


def test_denoiser_learns_with_the_class_dropped_for_guidance():
    p = {
        **dataclasses.asdict(DenoiserConfig(**TINY_UNET, cond_drop=0.5, lr=2e-3)),
        "size": 16,
        "labels": 2,
        "classes": 2,
    }
    stage = DenoiserStage(p)
    torch.manual_seed(0)
    models = stage.build(torch.device("cpu"))
    opts = stage.optimizers(models)
    gen = torch.Generator().manual_seed(0)
    yy, xx = np.mgrid[:16, :16]
    labels = torch.as_tensor(
        np.stack([(yy - 8) ** 2 + (xx - 8) ** 2 < r * r for r in (3, 4, 5, 6) * 2])
    ).long()
    image = torch.where(
        labels.bool()[:, None], torch.tensor([-0.6, -0.8, 0.2]).view(1, 3, 1, 1), torch.tensor(0.8)
    )
    batch = {"image": image.float(), "labels": labels, "cls": torch.tensor([0, 1] * 4)}
    before = stage.validate(models, batch, AMP)["val_loss"]
    seen = []
    g = models["G"]
    hook = g.register_forward_pre_hook(
        lambda m, a, kw: seen.extend(kw["class_labels"].tolist()), with_kwargs=True
    )
    for _ in range(80):
        stage.train_step(models, opts, batch, gen, AMP)
    hook.remove()
    assert (
        stage.validate(models, batch, AMP)["val_loss"] < 0.7 * before
    )  # the EMA copy denoises better
    assert 0.3 < seen.count(2) / len(seen) < 0.7  # ~half the classes were the null class
    ema = dict(models["ema"].named_parameters())
    assert any(
        not torch.equal(ema[k], v) for k, v in models["G"].named_parameters()
    )  # an average, not a copy


def _split(n=20, size=32):
    from cytoray.data.source import simulated_set
    from cytoray.data.splits import make_manifest

    ds = simulated_set("cytology", n, size, 0)
    man, _ = make_manifest(ds, [3, 1, 1], 0)
    return ds.subset(man.indices("train")), ds.subset(man.indices("val")), man.hash


def _tiny(**sampling) -> DiffusionConfig:
    cfg = DiffusionConfig()
    return dataclasses.replace(
        cfg,
        mask_gan=dataclasses.replace(cfg.mask_gan, epochs=1, g_base=8, d_base=8, z_dim=8),
        denoiser=dataclasses.replace(cfg.denoiser, epochs=2, grid_steps=2, **TINY_UNET),
        sampling=dataclasses.replace(cfg.sampling, steps=3, **sampling),
    )


def test_mask_gans_are_syncgans_own_stages():
    from cytoray.generators.syncgan import SynCGAN, SynCGANConfig

    train, val, key = _split()
    cfg = dataclasses.replace(_tiny(), prior="gan")
    mine = {
        s.label: s.name
        for s in Diffusion.stages(train, val, cfg, key, 0)
        if s.label.startswith("mask_gan/")
    }
    theirs = {
        s.label: s.name
        for s in SynCGAN.stages(
            train, val, SynCGANConfig(masks=cfg.masks, mask_gan=cfg.mask_gan, prior="gan"), key, 0
        )
        if s.label.startswith("mask_gan/")
    }
    assert mine == theirs and len(mine) == 2  # same cache folders: trained once for both generators
    # prior bank (the default): the training maps are the prior, no mask GAN is trained
    assert [s.label for s in Diffusion.stages(train, val, _tiny(), key, 0)] == ["denoiser"]


def test_the_ratio_study_searches_it_by_name():
    from cytoray.classify.policies import parse_policy
    from cytoray.config import load
    from cytoray.experiments.driver import resolve_file
    from cytoray.experiments.ratio import RatioStudyConfig
    from cytoray.training.search import load_search_space

    cfg = load(RatioStudyConfig, None, ["generator.name=diffusion"])
    assert (
        cfg.name == "diffusion_ratio"
        and cfg.tune.search_space == "configs/search/diffusion_ratio.yaml"
    )
    space = load_search_space(
        resolve_file(cfg.tune.search_space, "tune.search_space"), cfg
    )  # every key a diffusion setting
    assert any(k.startswith("generator.denoiser.") for k in space.space)
    assert (
        load(RatioStudyConfig, None, []).tune.search_space == "configs/search/syncgan_ratio.yaml"
    )  # SynCGAN's stays its own
    assert [parse_policy(p).sources for p in ("diffusion", "orig+diffusion", "diffusion-only")] == [
        ("diffusion",),
        ("orig", "diffusion"),
        ("diffusion",),
    ]


def test_trains_under_ray_train_with_grids_and_sampling_settings_retrain_nothing(tmp_path):
    from cytoray.generators import load_bundle
    from cytoray.training.config import RunConfig

    train, val, key = _split()
    run = RunConfig(sample_every=1, storage_path=str(tmp_path / "ray"))
    out, res = Diffusion.train(train, val, _tiny(), tmp_path / "b1", tmp_path / "cache", key, run)
    den = res["denoiser"]
    assert [h["epoch"] for h in den.history] == [0, 1] and all(
        np.isfinite(h["val_loss"]) for h in den.history
    )
    assert len(den.grids()) == 2  # one grid (map | sample | real) per epoch
    assert set(res) == {"denoiser"}  # prior bank: no mask GAN
    gen = load_bundle(out)
    imgs, masks = gen.sample(4, "malignant", seed=2)
    # the maps are the class's training maps, warped: each holds the nucleus label where a
    # training map of the class does, in a share near theirs
    from cytoray.generators.syncgan import priors
    from cytoray.masks.labels import NUCLEUS

    drawn = gen.maps.draw("malignant", 32, 3, torch.Generator(), np.random.default_rng(0))
    own = priors(train, _tiny().masks)[train.labels == train.class_names.index("malignant")]
    assert abs((drawn == NUCLEUS).mean() - (own == NUCLEUS).mean()) < 0.05
    assert (
        imgs.shape == (4, 32, 32, 3)
        and imgs.dtype == np.uint8
        and masks.dtype == bool
        and masks.shape == (4, 32, 32)
    )
    out2, res2 = Diffusion.train(
        train, val, _tiny(guidance=4.0), tmp_path / "b2", tmp_path / "cache", key, run
    )
    assert all(
        r.cached for r in res2.values()
    )  # guidance is a sampling setting: every stage from the cache
    again, masks2 = load_bundle(out2).sample(4, "malignant", seed=2)
    assert np.array_equal(masks, masks2) and not np.array_equal(
        imgs, again
    )  # same maps, other guidance


@pytest.mark.slow
def test_trains_under_ddp_with_two_workers(tmp_path):
    """Two Ray Train workers (DDP, gloo on CPU): the EMA copy is wrapped too but never runs forward."""
    from cytoray.generators import load_bundle
    from cytoray.training.config import RunConfig

    train, val, key = _split(24)
    run = RunConfig(num_workers=2, storage_path=str(tmp_path / "ray"))
    out, res = Diffusion.train(train, val, _tiny(), tmp_path / "b", tmp_path / "cache", key, run)
    assert [h["epoch"] for h in res["denoiser"].history] == [0, 1] and all(
        np.isfinite(h["loss"]) for h in res["denoiser"].history
    )
    imgs, _ = load_bundle(out).sample(2, "benign", seed=0)
    assert imgs.shape == (2, 32, 32, 3)
