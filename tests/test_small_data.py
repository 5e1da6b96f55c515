"""Small-data GAN training (generators/small_data.py) and cytology label maps (masks/labels.py).

The augmentation of D's inputs must be differentiable (G learns through it) and move a
(condition, image) pair together; the moving average must move; ADA must raise its probability
when D is over-confident; label maps of simulated cells must hold glass, cytoplasm and nucleus;
the CGAN must train on one-hot label maps (its reconstruction error falls).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cytoray.errors import ConfigError
from cytoray.generators.gan import (
    CGANConfig,
    CGANStage,
    LatentGANConfig,
    MaskGANStage,
    masks_to_unit,
    stage_params,
)
from cytoray.generators.small_data import (
    Augmenter,
    apply,
    draw,
    ema_update,
    make_ema,
    parse_policy,
    r1_penalty,
)
from cytoray.masks.labels import (
    CYTOPLASM,
    GLASS,
    N_LABELS,
    NUCLEUS,
    label_map,
    label_maps,
    paint,
    region_colours,
)
from cytoray.training.stage import amp_context

ALL = ("colour", "translation", "cutout", "dihedral")
CPU = torch.device("cpu")
CPU_AMP = amp_context(CPU, False)


def test_augmentation_is_differentiable_and_changes_its_input():
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    prm = draw(ALL, 6, 16, torch.Generator().manual_seed(0))
    y = apply(x * 2 - 1, prm)
    assert y.shape == x.shape and not torch.allclose(y, x * 2 - 1)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", ALL)
def test_one_draw_moves_real_and_fake_identically(op):
    """The same draw on two batches is the same transform: applied to copies, equal outputs;
    the condition channels of a (label map, image) pair move with the image, untouched by colour."""
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(4, 4, 16, 16) * 2 - 1
    fake = real.clone()
    aug = Augmenter(op, size=16, colour_from=1)
    a, b = aug.pair(real, fake, gen)
    assert torch.equal(a, b)
    # geometry: the condition channel under the op equals the image channel's geometry (colour aside)
    pair = torch.cat([real[:, :1], real[:, :1].repeat(1, 3, 1, 1)], 1)
    out = aug(pair, torch.Generator().manual_seed(2))
    if op == "colour":
        assert torch.equal(out[:, :1], pair[:, :1]) and not torch.equal(out[:, 1:], pair[:, 1:])
    else:
        assert torch.equal(out[:, 1:2], out[:, :1])


def test_ada_raises_the_probability_when_d_is_sure_of_reals():
    aug = Augmenter("translation", ada_target=0.6, size=16)
    assert float(aug.p) == 0.0
    for _ in range(16):
        aug.observe(torch.full((8, 1, 2, 2), 5.0), batch=8)  # sign(D(real)) = 1 > 0.6: overfitting
    p_up = float(aug.p)
    assert p_up > 0.0
    for _ in range(16):
        aug.observe(torch.full((8, 1, 2, 2), -5.0), batch=8)
    assert float(aug.p) < p_up


def test_ema_moves_towards_the_generator_and_keeps_its_statistics():
    g = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = make_ema(g)
    assert not any(p.requires_grad for p in ema.parameters())
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    g(torch.randn(8, 3))  # moves BatchNorm's running statistics
    ema_update(ema, g, 0.9)
    for b, e in zip(before, ema.parameters()):
        assert torch.allclose(e, b + 0.1, atol=1e-6)
    assert torch.equal(ema[1].running_mean, g[1].running_mean)


def test_r1_penalty_is_positive_and_differentiable():
    d = torch.nn.Conv2d(3, 1, 3)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    r1 = r1_penalty(d(x), x)
    assert r1 > 0
    r1.backward()
    assert d.weight.grad is not None


def test_policy_errors_name_the_key():
    assert parse_policy("color, cutout") == ("colour", "cutout")
    with pytest.raises(ConfigError, match="cgan.diffaug"):
        CGANConfig(diffaug="colour,zoom").validate()
    with pytest.raises(ConfigError, match="ema"):
        LatentGANConfig(ema=1.0).validate()


# ----------------------------------------------------------------------------- label maps


def test_label_maps_of_simulated_cells_hold_glass_cytoplasm_and_nucleus():
    from cytoray.data.simulate import simulate
    from cytoray.masks.nucleus import nucleus_mask_report
    from cytoray.masks.params import MaskParams

    s = simulate("cytology", n=16, size=64, seed=0)
    nuc = np.stack([nucleus_mask_report(i, MaskParams())[0] for i in s.images])
    maps, flags = label_maps(s.images, nuc)
    assert maps.dtype == np.uint8 and maps.shape == nuc.shape and maps.max() < N_LABELS
    assert np.array_equal(maps == NUCLEUS, nuc)  # the nucleus label is the nucleus mask
    three = [all((m == k).any() for k in (GLASS, CYTOPLASM, NUCLEUS)) for m in maps]
    assert np.mean(three) >= 0.4, (
        f"only {sum(three)}/{len(maps)} simulated cells have glass, cytoplasm and nucleus"
    )
    assert all((m == CYTOPLASM).mean() > 0.05 for m in maps)  # every simulated cell has a body
    # the colours painted back come from the regions
    cols = region_colours(s.images, maps)
    flat = paint(maps, cols)
    assert flat.shape == (16, 3, 64, 64) and flat.min() >= -1 and flat.max() <= 1


def test_label_map_keeps_padding_out_of_the_cell_and_flags_a_bare_nucleus():
    noise = np.random.default_rng(0).integers(-6, 7, (64, 64, 3))
    rgb = np.full((64, 64, 3), 235) + noise  # glass has grain; a padding band is flat
    rgb[20:50, 15:50] = (150, 120, 170) + noise[20:50, 15:50]  # a cell body
    rgb[28:40, 25:38] = (60, 40, 110) + noise[28:40, 25:38]  # its nucleus
    rgb[:10] = (120, 110, 160)  # a flat padding band
    rgb = rgb.clip(0, 255).astype(np.uint8)
    nuc = np.zeros((64, 64), bool)
    nuc[28:40, 25:38] = True
    m, flags = label_map(rgb, nuc)
    assert (m[:10] == GLASS).all() and m[
        45, 30
    ] == CYTOPLASM  # a padding band is never cell and m[60, 5] == GLASS and m[30, 30] == NUCLEUS
    assert not flags
    bare = (np.full((64, 64, 3), 235) + noise).clip(0, 255).astype(np.uint8)
    bare[28:40, 25:38] = (60, 40, 110)
    _, flags = label_map(bare, nuc)
    assert [f["flag"] for f in flags] == ["no_cytoplasm"]


def test_label_maps_find_the_glass_of_a_dim_slide_against_its_own_white():
    """A slide lit to ~185 grey (as Herlev's): against 255 its glass is as dense as a cell body and
    the map has no glass (no outline for the generator, `white: absolute`, the default); against the
    white level of the set (`white: set`, per channel the median of each image's 99th percentile) the
    pale cell body and
    the glass around it are told apart, as they are on a bright slide. A close-up in such a set
    keeps its cell whole."""
    from cytoray.masks.labels import slide_white

    rng = np.random.default_rng(0)
    imgs, nucs, yy = [], [], np.mgrid[:64, :64]
    for i in range(6):
        rgb = np.full((64, 64, 3), (186, 184, 188), np.float64) + rng.normal(0, 3, (64, 64, 3))
        cy, cx = 32 + rng.integers(-4, 5), 32 + rng.integers(-4, 5)
        body = (yy[0] - cy) ** 2 + (yy[1] - cx) ** 2 < 22**2
        nuc = (yy[0] - cy) ** 2 + (yy[1] - cx) ** 2 < 4**2
        rgb[body] = (130, 160, 150) + rng.normal(0, 3, (body.sum(), 3))  # pale green cytoplasm
        rgb[nuc] = (60, 50, 100)
        imgs.append(rgb.clip(0, 255).astype(np.uint8))
        nucs.append(nuc)
    imgs, nucs = np.stack(imgs), np.stack(nucs)
    assert np.allclose(slide_white(imgs), (186, 184, 188), atol=10)
    old, _ = label_maps(imgs, nucs)  # the default: 255
    new, _ = label_maps(imgs, nucs, white="set")
    assert all((m == GLASS).mean() < 0.01 for m in old)  # against 255: no glass, no outline
    for m, n in zip(new, nucs):
        glass_true = ~((yy[0] - 32) ** 2 + (yy[1] - 32) ** 2 < 30**2)  # far outside any body
        assert (m[glass_true] == GLASS).mean() > 0.95 and (m[n] == NUCLEUS).all()
        assert (m == CYTOPLASM).mean() > 0.2
    # close-ups in a set that mostly shows glass: the white stays the glass's, and a close-up's
    # body (all of the image, denser than glass) stays whole
    close = np.full((2, 64, 64, 3), (130, 160, 150), np.float64) + rng.normal(0, 3, (2, 64, 64, 3))
    mixed = np.concatenate([imgs, close.clip(0, 255).astype(np.uint8)])
    cmaps, _ = label_maps(mixed, np.concatenate([nucs, np.zeros((2, 64, 64), bool)]), white="set")
    assert all((m == CYTOPLASM).mean() > 0.9 for m in cmaps[-2:])
    with pytest.raises(ValueError, match="white='grey'"):
        label_maps(imgs, nucs, white="grey")


def test_one_hot_conditions():
    m = np.array([[[0, 1], [2, 1]]], np.uint8)
    y = masks_to_unit(m, 3)
    assert y.shape == (1, 3, 2, 2) and set(np.unique(y)) == {-1.0, 1.0}
    assert (y.argmax(1) == m).all()
    assert masks_to_unit(m > 1).shape == (1, 1, 2, 2)  # a binary mask stays one channel


# ----------------------------------------------------------------------------- stages


def _maps(n=8, size=32, seed=0):
    rng = np.random.default_rng(seed)
    m = np.zeros((n, size, size), np.uint8)
    imgs = np.full((n, size, size, 3), 230, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(6, 9))]
        body = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        nuc = (yy - cy) ** 2 + (xx - cx) ** 2 < (r // 2) ** 2
        m[i][body], m[i][nuc] = CYTOPLASM, NUCLEUS
        imgs[i][body] = rng.integers(100, 200, 3)
        imgs[i][nuc] = (70, 40, 120)
    return m, imgs


def test_cgan_trains_on_one_hot_label_maps():
    m, imgs = _maps()
    y = np.concatenate([masks_to_unit(m, N_LABELS), paint(m, region_colours(imgs, m))], 1)
    x = imgs.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1
    stage = CGANStage(
        {
            **stage_params(CGANConfig(g_base=8, d_base=8, d_layers=2, ada=0.6), 32),
            "in_ch": y.shape[1],
        }
    )
    torch.manual_seed(0)
    models = stage.build(CPU)
    assert set(models) == {"G", "D", "G_ema", "aug"} and stage.keep == "G_ema"
    opts, gen, amp = (
        stage.optimizers(models),
        torch.Generator().manual_seed(0),
        amp_context(CPU, False),
    )
    batch = {"mask": torch.from_numpy(y), "image": torch.from_numpy(x)}
    ema0 = [p.clone() for p in models["G_ema"].parameters()]
    mse = [stage.train_step(models, opts, batch, gen, amp)["mse"] for _ in range(40)]
    assert np.mean(mse[-5:]) < 0.5 * np.mean(mse[:5]), mse
    assert any(not torch.equal(a, b) for a, b in zip(ema0, models["G_ema"].parameters()))
    g = stage.grid(models, {"mask": batch["mask"][:2], "image": batch["image"][:2]})
    assert g.dtype == np.uint8 and g.ndim == 3


@pytest.mark.parametrize("augment", ["dihedral", "none"])
def test_cgan_turns_each_condition_and_its_image_together(augment):
    """cgan.augment dihedral: every training pair D sees is one symmetry of a batch pair, the
    condition's nucleus exactly where the image's is; none: the pairs as they are."""
    m, imgs = _maps()
    y = masks_to_unit(m, N_LABELS)
    x = imgs.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1
    cfg = CGANConfig(g_base=8, d_base=8, d_layers=2, diffaug="", augment=augment)
    stage = CGANStage({**stage_params(cfg, 32), "in_ch": N_LABELS})
    models = stage.build(CPU)
    seen = []
    models["D"].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    batch = {"mask": torch.from_numpy(y), "image": torch.from_numpy(x)}
    stage.train_step(
        models, stage.optimizers(models), batch, torch.Generator().manual_seed(0), CPU_AMP
    )
    real = seen[0]  # D's first call: the real pairs
    cond, img = real[:, :N_LABELS], real[:, N_LABELS:]
    # the image's nucleus (red 70 of 255: the only dark red) lies where the condition says
    assert torch.equal(cond[:, NUCLEUS] > 0, img[:, 0] < 85 / 127.5 - 1)
    pairs = torch.cat([batch["mask"], batch["image"]], 1)
    symmetries = [torch.rot90(t, k, (2, 3)) for t in (pairs, pairs.flip(3)) for k in range(4)]
    for i in range(len(real)):
        assert any(torch.equal(real[i], s[i]) for s in symmetries)
    moved = sum(not torch.equal(real[i], pairs[i]) for i in range(len(real)))
    assert moved >= 4 if augment == "dihedral" else moved == 0
    with pytest.raises(ConfigError, match="cgan.augment"):
        CGANConfig(augment="rot45").validate()


def test_cgan_trains_on_crops_and_draws_whole_images():
    """cgan.crop: D sees windows of the crop's side, each the same window of a batch pair (the
    condition's nucleus where the image's is); G, a UNet as deep as the crop allows, still draws
    whole images from whole maps, and its loss falls."""
    m, imgs = _maps()
    y = masks_to_unit(m, N_LABELS)
    x = imgs.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1
    cfg = CGANConfig(g_base=8, d_base=8, d_layers=2, diffaug="", crop=16, lr=1e-3)
    stage = CGANStage({**stage_params(cfg, 32), "in_ch": N_LABELS})
    torch.manual_seed(0)
    models = stage.build(CPU)
    assert models["G"].depth == 4 and stage.cfg.train_side == 16  # 16 px: 4 halvings, not 32's 5
    seen = []
    models["D"].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    batch = {"mask": torch.from_numpy(y), "image": torch.from_numpy(x)}
    opts, gen = stage.optimizers(models), torch.Generator().manual_seed(0)
    mse = [stage.train_step(models, opts, batch, gen, CPU_AMP)["mse"] for _ in range(40)]
    real = seen[0]
    assert real.shape[-2:] == (16, 16)
    cond, img = real[:, :N_LABELS], real[:, N_LABELS:]
    assert torch.equal(cond[:, NUCLEUS] > 0, img[:, 0] < 85 / 127.5 - 1)
    pairs = torch.cat([batch["mask"], batch["image"]], 1)
    windows = [pairs[:, :, t : t + 16, u : u + 16] for t in range(17) for u in range(17)]
    for i in range(len(real)):
        assert any(torch.equal(real[i], w[i]) for w in windows)
    assert len({tuple(r.flatten()[:64].tolist()) for r in real}) > 1
    assert np.mean(mse[-5:]) < 0.5 * np.mean(mse[:5]), mse
    with torch.no_grad():
        assert stage.sampler(models)(batch["mask"]).shape == (len(x), 3, 32, 32)
    with pytest.raises(ConfigError, match=r"cgan\.crop=32 with 48-px"):
        CGANStage({**stage_params(CGANConfig(crop=32), 48), "in_ch": N_LABELS})
    with pytest.raises(ConfigError, match="cgan.crop"):
        CGANConfig(crop=7).validate()


@pytest.mark.parametrize("recon", ["mse", "l1", "fm"])
def test_cgan_reconstruction_terms_train(recon):
    m, imgs = _maps(n=4)
    y = masks_to_unit(m, N_LABELS)
    x = imgs.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1
    stage = CGANStage(
        {
            **stage_params(CGANConfig(g_base=8, d_base=8, d_layers=2, recon=recon, r1=1.0), 32),
            "in_ch": N_LABELS,
        }
    )
    models = stage.build(CPU)
    out = stage.train_step(
        models,
        stage.optimizers(models),
        {"mask": torch.from_numpy(y), "image": torch.from_numpy(x)},
        torch.Generator().manual_seed(0),
        amp_context(CPU, False),
    )
    assert all(np.isfinite(v) for v in out.values())


def test_label_map_gan_draws_soft_one_hot_maps():
    m, _ = _maps()
    stage = MaskGANStage(
        {
            **stage_params(LatentGANConfig(g_base=8, d_base=8, d_layers=2, z_dim=8), 32),
            "labels": N_LABELS,
        }
    )
    models = stage.build(CPU)
    assert stage.colour_from == N_LABELS  # no colour op on a label map
    opts, gen, amp = (
        stage.optimizers(models),
        torch.Generator().manual_seed(0),
        amp_context(CPU, False),
    )
    for _ in range(3):
        out = stage.train_step(
            models, opts, {"mask": torch.from_numpy(masks_to_unit(m, N_LABELS))}, gen, amp
        )
    assert np.isfinite(out["loss_d"]) and np.isfinite(out["loss_g"])
    soft = stage._g_out(models["G_ema"], torch.randn(2, 8))
    assert soft.shape == (2, N_LABELS, 32, 32) and torch.allclose(
        (soft + 1).sum(1) / 2, torch.ones(2, 32, 32), atol=1e-5
    )


def test_cyclegan_and_refiner_take_the_same_piece():
    """CycleGAN's Ds and the refiner's D see augmented inputs through the shared Augmenter; CycleGAN
    keeps G's moving average."""
    from cytoray.generators.cyclegan import CycleGANConfig, CycleGANStage
    from cytoray.generators.cyclegan import stage_params as cg_params
    from cytoray.generators.refined_sim import RefinerConfig

    cfg = CycleGANConfig(
        diffaug="translation,cutout,dihedral",
        ema=0.99,
        g_base=4,
        d_base=4,
        n_blocks=1,
        d_layers=2,
        batch_size=2,
    )
    cfg.validate()
    stage = CycleGANStage(cg_params(cfg, 32, 4))
    models = stage.build(CPU)
    assert "aug" in models and "G_ema" in models and stage.keep == "G_ema"
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    before = [p.clone() for p in models["G_ema"].parameters()]
    out = stage.train_step(
        models,
        stage.optimizers(models),
        {"A": x, "B": x.flip(3)},
        torch.Generator().manual_seed(0),
        amp_context(CPU, False),
    )
    assert np.isfinite(out["loss_d"]) and any(
        not torch.equal(a, b) for a, b in zip(before, models["G_ema"].parameters())
    )
    RefinerConfig(diffaug="translation,cutout").validate()
    with pytest.raises(ConfigError, match="refiner.diffaug"):
        RefinerConfig(diffaug="colour").validate()


def test_ema_decay_warms_up_for_short_runs():
    from cytoray.generators.small_data import ema_decay

    assert ema_decay(0.999, 0) == pytest.approx(0.1) and ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 10**6) == 0.999


def test_select_kid_scores_the_sampler_against_training_cells_and_keeps_the_best_epoch():
    """`cgan.select: kid`: SynCGAN hands its CGAN stage conditions drawn as sampling draws them (2 per
    training cell, per class) and the training cells; the stage scores every `select_every`-th and
    the last epoch, and a sampler that copies training cells scores far below a flat grey one."""
    import dataclasses

    from cytoray.data.source import simulated_set
    from cytoray.data.splits import make_manifest
    from cytoray.generators.syncgan import SynCGAN, SynCGANConfig

    ds = simulated_set("cytology", 24, 32, 0)
    man, _ = make_manifest(ds, [3, 1, 1], 0)
    train, val = ds.subset(man.indices("train")), ds.subset(man.indices("val"))
    cfg = SynCGANConfig()
    cgan = dataclasses.replace(
        cfg.cgan, select="kid", select_every=2, epochs=3, g_base=8, d_base=8, full_res=8
    )
    spec = SynCGAN.stages(train, val, dataclasses.replace(cfg, cgan=cgan), man.hash, 0)[-1]
    v, stage = spec.val, spec.stage
    counts = np.bincount(train.labels, minlength=2)
    assert v["kid_cond"].shape == (2 * len(train), stage.cfg.in_ch, 32, 32)
    assert np.array_equal(np.bincount(v["kid_cls"], minlength=2), 2 * counts)
    assert np.array_equal(v["kid_real"], train.images)
    # the same conditions at every call (seeded), none in a stage that keeps the last weights
    again = SynCGAN.stages(train, val, dataclasses.replace(cfg, cgan=cgan), man.hash, 0)[-1]
    assert np.array_equal(again.val["kid_cond"], v["kid_cond"])
    assert "kid_cond" not in SynCGAN.stages(train, val, cfg, man.hash, 0)[-1].val

    models, val_t = stage.build(CPU), stage.prepare(v, CPU)
    opts, amp = stage.optimizers(models), amp_context(CPU, False)
    scored = []
    for epoch in range(3):
        stage.begin_epoch(opts, epoch)
        scored.append("kid_train" in stage.validate(models, val_t, amp))
    assert scored == [False, True, True]  # epoch 2 of every 2, and the last
    assert stage.selection({"kid_train": 0.5}, 1) < stage.selection({}, 2)

    class Replay(torch.nn.Module):  # a sampler drawing cells of the asked class from training
        def __init__(self, images):
            super().__init__()
            self.images, self.i = images, 0

        def noise_shape(self, x):
            return ()

        def forward(self, y):
            out = self.images[self.i : self.i + len(y)]
            self.i += len(y)
            return out

    unit = torch.from_numpy(train.images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
    pick = np.concatenate(
        [np.repeat(np.flatnonzero(train.labels == c), 2) for c in range(2)]
    )  # kid_cond is ordered by class
    copies, grey = Replay(unit[pick]), Replay(torch.zeros(len(pick), 3, 32, 32))
    stage.sampler = lambda models: copies
    kid_copies = stage.kid_to_training(models, val_t)
    stage.sampler = lambda models: grey
    kid_grey = stage.kid_to_training(models, val_t)
    assert kid_copies < 0.2 * kid_grey, (kid_copies, kid_grey)
