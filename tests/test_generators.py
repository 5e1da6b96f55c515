"""Generator trainers: stabilisers, falling losses, Ray Train runs, stage cache, resume after SIGKILL."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cytoray.generators.gan import (
    CGANConfig,
    CGANStage,
    LatentGANConfig,
    MaskGANStage,
    VanillaGANStage,
    decay_factor,
    masks_to_unit,
    stage_params,
)
from cytoray.generators.losses import d_targets
from cytoray.generators.syncgan import SynCGANConfig
from cytoray.generators.vanilla import GANConfig
from cytoray.nets.images import to_unit
from cytoray.process_env import POLL_ENV
from cytoray.training.config import RunConfig
from cytoray.training.stage import amp_context

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- stabilisers


def test_label_smoothing_ranges_and_flip_rate():
    g = torch.Generator().manual_seed(0)
    like = torch.zeros(20000, 1, 2, 2)
    real = d_targets(like, True, 0.9, 0.1, 0.0, g)
    fake = d_targets(like, False, 0.9, 0.1, 0.0, g)
    assert real.min() >= 0.9 and real.max() <= 1.0 and real.std() > 0.02
    assert fake.min() >= 0.0 and fake.max() <= 0.1
    assert torch.equal(real[:, :, 0, 0], real[:, :, 1, 1])  # one target per sample, whole patch map
    flipped = d_targets(like, True, 0.9, 0.1, 0.2, g)[:, 0, 0, 0]
    assert (
        abs((flipped <= 0.1).float().mean().item() - 0.2) < 0.02
    )  # ~20% of real targets became fake
    hard = d_targets(like, True)
    assert torch.all(hard == 1.0)


def test_stabiliser_config_is_validated():
    from cytoray.config import from_dict
    from cytoray.errors import ConfigError

    with pytest.raises(ConfigError, match="overlap"):
        from_dict(LatentGANConfig, {"smooth_real_low": 0.2, "smooth_fake_high": 0.3}, "test.yaml")
    with pytest.raises(ConfigError, match=r"test.yaml: unknown key 'flip'"):
        from_dict(LatentGANConfig, {"flip": 0.1}, "test.yaml")
    with pytest.raises(ConfigError, match="augment='rotate'.*none, dihedral"):
        from_dict(LatentGANConfig, {"augment": "rotate"}, "test.yaml")


def test_dihedral_gives_each_image_one_of_the_eight_symmetries():
    from cytoray.generators.augment import dihedral

    x = torch.arange(64 * 36, dtype=torch.float32).view(64, 1, 6, 6)  # every pixel distinct
    out = dihedral(x, torch.Generator().manual_seed(0))
    seen = set()
    for a, b in zip(x, out):
        variants = [torch.rot90(v, k, (1, 2)) for v in (a, a.flip(2)) for k in range(4)]
        hit = [i for i, v in enumerate(variants) if torch.equal(v, b)]
        assert len(hit) == 1
        seen.add(hit[0])
    assert len(seen) == 8  # all eight occur in 64 draws
    again = dihedral(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded: a resumed or repeated run draws the same


@pytest.mark.parametrize("augment", ["dihedral", "none"])
def test_mask_gan_discriminator_sees_the_augmented_real_masks(augment):
    m, _ = _tiny_pairs(n=8)
    real = torch.from_numpy(m)
    stage = MaskGANStage(
        {
            **stage_params(LatentGANConfig(augment=augment, diffaug=""), 32),
            "g_base": 8,
            "d_base": 8,
            "z_dim": 8,
        }
    )
    models = stage.build(torch.device("cpu"))
    seen = []
    models["D"].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    stage.train_step(
        models,
        stage.optimizers(models),
        {"mask": real},
        torch.Generator().manual_seed(3),
        amp_context(torch.device("cpu"), False),
    )
    d_real = seen[0]  # D's first call of a step is on the real batch
    same = [torch.equal(a, b) for a, b in zip(d_real, real)]
    if augment == "none":
        assert all(same)
    else:
        assert not all(same)
        for a, b in zip(d_real, real):
            assert any(
                torch.equal(a, torch.rot90(v, k, (1, 2))) for v in (b, b.flip(2)) for k in range(4)
            )


# ----------------------------------------------------------------------------- steps


def _tiny_pairs(n=8, size=32, seed=0):
    from cytoray.data.simulate import simulate

    s = simulate("cytology", n=n, size=size, seed=seed)
    return masks_to_unit(s.masks.astype(bool)), to_unit(s.images)


def test_cgan_step_losses_fall():
    torch.manual_seed(0)
    m, x = _tiny_pairs()
    stage = CGANStage({**stage_params(CGANConfig(), 32), "g_base": 8, "d_base": 8, "lr": 1e-3})
    (models,) = (stage.build(torch.device("cpu")),)
    opts, gen = stage.optimizers(models), torch.Generator().manual_seed(0)
    batch = {"mask": torch.from_numpy(m), "image": torch.from_numpy(x)}
    hist = [
        stage.train_step(models, opts, batch, gen, amp_context(torch.device("cpu"), False))
        for _ in range(40)
    ]
    assert np.mean([h["mse"] for h in hist[-5:]]) < 0.5 * np.mean([h["mse"] for h in hist[:3]])
    assert np.mean([h["loss_g"] for h in hist[-5:]]) < np.mean([h["loss_g"] for h in hist[:3]])
    val = stage.val_loss(models, batch, amp_context(torch.device("cpu"), False))
    assert np.isfinite(val)
    grid = stage.grid(models, {"mask": batch["mask"][:4], "image": batch["image"][:4]})
    assert grid.dtype == np.uint8 and grid.shape[2] == 3


def test_cgan_learning_rate_decays_linearly_over_the_last_share_of_epochs():
    # pix2pix's lambda_rule: constant, then (epochs - epoch) / (n_decay + 1) over the last n_decay epochs
    assert [decay_factor(e, 10, 0.0) for e in (0, 9)] == [1.0, 1.0]
    got = [decay_factor(e, 10, 0.5) for e in range(10)]
    assert got[:5] == [1.0] * 5 and got[5:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    stage = CGANStage(
        {**stage_params(CGANConfig(epochs=10, anneal=0.5), 32), "g_base": 8, "d_base": 8}
    )
    opts = stage.optimizers(stage.build(torch.device("cpu")))
    seen = []
    for epoch in (0, 7, 9):  # the loop calls begin_epoch before each epoch's first step
        stage.begin_epoch(opts, epoch)
        seen.append({k: o.param_groups[0]["lr"] for k, o in opts.items()})
    assert [s["G"] for s in seen] == pytest.approx([2e-4, 2e-4 * 3 / 6, 2e-4 / 6])
    assert all(s["G"] == s["D"] for s in seen)
    with pytest.raises(Exception, match="cgan.anneal=1.5"):
        CGANConfig(anneal=1.5).validate()


def test_cgan_step_draws_its_noise_from_the_stage_generator():
    """The CGAN's per-pixel noise comes from the stage's generator (checkpointed with it, sharded
    like z under DDP), not torch's global stream: the same stage seed gives the same step whatever the
    global seed, another stage seed another one."""
    m, x = _tiny_pairs(n=4)
    batch = {"mask": torch.from_numpy(m), "image": torch.from_numpy(x)}

    def step(global_seed: int, stage_seed: int) -> dict:
        stage = CGANStage(
            stage_params(
                CGANConfig(g_base=4, d_base=4, full_res=4, dropout=0.0, diffaug="", ema=0.0), 32
            )
        )
        torch.manual_seed(0)
        models = stage.build(torch.device("cpu"))
        opts = stage.optimizers(models)
        torch.manual_seed(global_seed)
        return stage.train_step(
            models,
            opts,
            batch,
            torch.Generator().manual_seed(stage_seed),
            amp_context(torch.device("cpu"), False),
        )

    a, b, c = step(1, 0), step(2, 0), step(1, 5)
    assert a == b and a["loss_g"] != c["loss_g"]


@pytest.mark.parametrize(
    "name,key,aug",
    [
        ("mask_gan", "mask", {}),
        ("gan", "image", {}),
        ("mask_gan", "mask", {"augment": "none"}),
        ("gan", "image", {"augment": "none"}),
    ],
)
def test_latent_gan_learns_foreground_fraction(name, key, aug):
    """The mask GAN (and RGB control) move their output statistics toward the real data, with
    (default) and without the dihedral augmentation of the real images."""
    torch.manual_seed(0)
    m, x = _tiny_pairs(n=16)
    data = torch.from_numpy(m if key == "mask" else x)
    p = {
        **stage_params(LatentGANConfig(**aug), 32),
        "g_base": 8,
        "d_base": 8,
        "z_dim": 16,
        "lr_g": 2e-3,
        "lr_d": 2e-4,
    }
    stage = {"mask_gan": MaskGANStage, "gan": VanillaGANStage}[name](p)
    models = stage.build(torch.device("cpu"))
    opts, gen = stage.optimizers(models), torch.Generator().manual_seed(0)
    z = torch.randn(64, 16)

    def gap():
        models["G"].eval()
        with torch.no_grad():
            out = stage._g_out(models["G"], z)
        models["G"].train()
        return abs(out.mean().item() - data.mean().item())

    before = gap()
    for _ in range(60):
        h = stage.train_step(
            models, opts, {key: data}, gen, amp_context(torch.device("cpu"), False)
        )
        assert np.isfinite(h["loss_d"]) and np.isfinite(h["loss_g"])
    assert gap() < before


# ----------------------------------------------------------------------------- Ray Train runs


def _cfg(tmp: Path, epochs: int = 2) -> SimpleNamespace:
    cfg = SimpleNamespace(
        syncgan=SynCGANConfig(prior="gan")
    )  # every stage kind; the bank prior reuses its CGAN
    cfg.syncgan.cgan = dataclasses.replace(cfg.syncgan.cgan, epochs=epochs, g_base=8, d_base=8)
    cfg.syncgan.mask_gan = dataclasses.replace(
        cfg.syncgan.mask_gan, epochs=epochs, g_base=8, d_base=8, z_dim=16
    )
    cfg.gan = GANConfig(epochs=epochs, g_base=8, d_base=8, z_dim=16)
    cfg.run = RunConfig(sample_every=1, storage_path=str(tmp / "ray"))
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """SynCGAN trained end to end under Ray Train on 40 simulated 32 px images."""
    from cytoray.data.source import simulated_set
    from cytoray.data.splits import make_manifest
    from cytoray.generators.syncgan import SynCGAN

    tmp = tmp_path_factory.mktemp("syncgan")
    ds = simulated_set("cytology", 40, 32, 0)
    man, _ = make_manifest(ds, [3, 1, 1], 0)
    train, val = ds.subset(man.indices("train")), ds.subset(man.indices("val"))
    cfg = _cfg(tmp)
    out, res = SynCGAN.train(
        train, val, cfg.syncgan, tmp / "bundle", tmp / "cache", man.hash, cfg.run
    )
    return {
        "tmp": tmp,
        "out": out,
        "res": res,
        "cfg": cfg,
        "train": train,
        "val": val,
        "hash": man.hash,
    }


def test_syncgan_trains_all_stages_and_samples(trained):
    from cytoray.generators import load_bundle

    res = trained["res"]
    assert set(res) == {"mask_gan/benign", "mask_gan/malignant", "cgan"}
    cg = res["cgan"].history
    assert [h["epoch"] for h in cg] == [0, 1] and all("val_loss_g" in h for h in cg)
    assert cg[-1]["loss_g"] < cg[0]["loss_g"]  # λ·MSE dominates and falls
    assert len(res["cgan"].grids()) == 2
    gen = load_bundle(trained["out"])
    imgs, masks = gen.sample(5, "malignant", seed=3)
    assert imgs.shape == (5, 32, 32, 3) and imgs.dtype == np.uint8 and masks.shape == (5, 32, 32)
    again, _ = gen.sample(5, "malignant", seed=3)
    assert np.array_equal(imgs, again)


def test_bank_prior_draws_warped_training_maps_without_a_mask_gan(trained):
    """`prior: bank`: no mask GAN trains (the CGAN comes from the stage cache of the GAN-prior run,
    whose result holds no bank: the bundle makes it from the masks again); a sampled map is a
    class's training map under a warp, with its labels, never the training map itself."""
    from cytoray.config import load
    from cytoray.errors import ConfigError
    from cytoray.generators import load_bundle
    from cytoray.generators.syncgan import SynCGAN
    from cytoray.masks.warp import unpack_maps

    cfg, tmp = dataclasses.replace(trained["cfg"].syncgan, prior="bank"), trained["tmp"]
    out, res = SynCGAN.train(
        trained["train"],
        trained["val"],
        cfg,
        tmp / "bank",
        tmp / "cache",
        trained["hash"],
        trained["cfg"].run,
    )
    assert set(res) == {"cgan"} and not list(out.glob("mask_gan_*"))
    gen = load_bundle(out)
    real = unpack_maps(gen.meta["bank"]["malignant"])
    assert len(real) == int(
        (trained["train"].labels == trained["train"].class_names.index("malignant")).sum()
    )
    imgs, maps = gen.sample_maps(6, "malignant", seed=1)
    assert imgs.shape == (6, 32, 32, 3) and maps.shape == (6, 32, 32) and maps.dtype == np.uint8
    assert set(np.unique(maps)) <= set(np.unique(real)) and len(np.unique(maps)) > 1
    assert not any(np.array_equal(m, r) for m in maps for r in real)
    again, maps2 = gen.sample_maps(6, "malignant", seed=1)
    assert np.array_equal(imgs, again) and np.array_equal(maps, maps2)
    with pytest.raises(ConfigError, match="warp=0.5"):
        load(SynCGANConfig, None, ["warp=0.5"])


def test_select_kid_keeps_the_epoch_whose_cells_are_nearest_the_training_cells(trained):
    """`cgan.select: kid` under Ray Train: every scored epoch carries `kid_train` in its history and
    the bundle's CGAN is the scored epoch with the lowest one."""
    from cytoray.generators.syncgan import SynCGAN

    cfg, tmp = trained["cfg"].syncgan, trained["tmp"]
    cfg = dataclasses.replace(
        cfg, prior="bank", cgan=dataclasses.replace(cfg.cgan, select="kid", select_every=1)
    )
    out, res = SynCGAN.train(
        trained["train"],
        trained["val"],
        cfg,
        tmp / "kid",
        tmp / "cache",
        trained["hash"],
        trained["cfg"].run,
    )
    hist = res["cgan"].history
    kids = [h["kid_train"] for h in hist]
    assert len(kids) == 2 and all(np.isfinite(k) and k > 0 for k in kids)
    assert res["cgan"].meta["best_epoch"] == int(np.argmin(kids))


def test_cgan_restarts_keep_the_training_whose_cells_are_nearest_the_training_cells(trained):
    """`cgan.restarts: 2` under Ray Train: two CGAN stages from two seeds (different weights), each
    scored at its last epoch against the training cells only, and the bundle holds the one with the
    lower KID; `select: val_loss` cannot score restarts and is refused before anything trains."""
    import torch

    from cytoray.bundle import load_state
    from cytoray.config import load
    from cytoray.errors import ConfigError
    from cytoray.generators import load_bundle
    from cytoray.generators.syncgan import SynCGAN

    cfg, tmp = trained["cfg"].syncgan, trained["tmp"]
    cfg = dataclasses.replace(cfg, prior="bank", cgan=dataclasses.replace(cfg.cgan, restarts=2))
    out, res = SynCGAN.train(
        trained["train"],
        trained["val"],
        cfg,
        tmp / "restarts",
        tmp / "cache",
        trained["hash"],
        trained["cfg"].run,
    )
    assert set(res) == {"cgan", "cgan/r1"}
    kids = [res[n].meta["best_metrics"]["kid_train"] for n in ("cgan", "cgan/r1")]
    assert all(np.isfinite(k) and k > 0 for k in kids) and kids[0] != kids[1]
    # only the last epoch is scored (select last): earlier epochs cost no Inception pass
    assert ["kid_train" in h for h in res["cgan"].history] == [False, True]
    meta = load_bundle(out).meta["cgan"]
    chosen = ("cgan", "cgan/r1")[int(np.argmin(kids))]
    assert meta["restart"] == chosen and meta["restart_kid_train"] == kids
    kept, other = (
        res[chosen].best_state(),
        res[({"cgan", "cgan/r1"} - {chosen}).pop()].best_state(),
    )
    bundle = load_state(out, "cgan")
    assert bundle.keys() == kept.keys()
    assert all(torch.equal(kept[k], bundle[k]) for k in bundle)
    assert not all(torch.equal(other[k], bundle[k]) for k in bundle)
    with pytest.raises(ConfigError, match="restarts=2"):
        load(SynCGANConfig, None, ["cgan.restarts=2", "cgan.select=val_loss"])


def test_stage_cache_reuses_finished_stages(trained):
    from cytoray.generators.syncgan import SynCGAN

    t0 = time.perf_counter()
    cfg = trained["cfg"]
    _, res = SynCGAN.train(
        trained["train"],
        trained["val"],
        cfg.syncgan,
        trained["tmp"] / "b2",
        trained["tmp"] / "cache",
        trained["hash"],
        cfg.run,
    )
    assert all(r.cached for r in res.values()) and time.perf_counter() - t0 < 30
    cfg, cfg2 = (
        cfg.syncgan,
        dataclasses.replace(cfg.syncgan, cgan=dataclasses.replace(cfg.syncgan.cgan, lam=50.0)),
    )  # only the CGAN changes
    keys = {k: r.dir.parent.name for k, r in trained["res"].items()}
    from cytoray.training.stage import stage_key

    p1, p2 = stage_params(cfg.cgan, 32), stage_params(cfg2.cgan, 32)
    assert stage_key("cgan", p1, "d", 0) != stage_key("cgan", p2, "d", 0)
    assert keys["mask_gan/benign"] != keys["mask_gan/malignant"]


def test_epochs_are_not_paced_by_ray_trains_poll(trained):
    # Train V2's controller takes one report a poll (every 2 s by default) and a worker's next
    # report waits for it, so each tiny epoch used to last ~2 s; cytoray polls every 0.1 s.
    # Idle time between one epoch's training steps and the next epoch's start, over the job's
    # 6 epochs (2 mask GANs and the CGAN, 2 epochs each): ~0.04 s now, ~1.9 s with a 2 s poll.
    hist = sorted(
        (h for r in trained["res"].values() for h in r.history), key=lambda h: h["epoch_start"]
    )
    idle = [b["epoch_start"] - a["epoch_start"] - a["epoch_s"] for a, b in zip(hist, hist[1:])]
    assert len(idle) == 5 and float(np.median(idle)) < 0.75, idle


def test_vanilla_gan_control(tmp_path, trained):
    from cytoray.generators import load_bundle
    from cytoray.generators.vanilla import VanillaGAN

    cfg = _cfg(tmp_path)
    out, res = VanillaGAN.train(
        trained["train"],
        trained["val"],
        cfg.gan,
        tmp_path / "gan",
        tmp_path / "cache",
        trained["hash"],
        cfg.run,
    )
    assert set(res) == {"gan/benign", "gan/malignant"}
    imgs, masks = load_bundle(out).sample(3, "benign")
    assert imgs.shape == (3, 32, 32, 3) and masks is None


RESUME_SCRIPT = """
import sys
from pathlib import Path
from cytoray.generators.gan import LatentGANConfig, MaskGANStage, stage_params, seeded_z, masks_to_unit
from cytoray.training.config import RunConfig
from cytoray.training.runner import run_stages
from cytoray.training.stage import StageSpec
from cytoray.data.source import simulated_set
tmp = Path(sys.argv[1])
ds = simulated_set("cytology", 20, 32, 0)
p = stage_params(LatentGANConfig(epochs=int(sys.argv[2]), g_base=8, d_base=8, z_dim=16), 32)
spec = StageSpec("resume", MaskGANStage(p), train={"mask": masks_to_unit(ds.masks)}, val=None, fixed={"z": seeded_z(4, 16, 0)}, data_key="k")
r = run_stages([spec], cache_root=tmp, run_cfg=RunConfig(sample_every=100, checkpoint_every=2))["resume"]
print("EPOCHS", [h["epoch"] for h in r.history])
"""


def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    # Ray Train's poll paces the epochs of this tiny stage (one report a poll), so 40 epochs last
    # ~40 s: a wide window to kill the job between its second checkpoint and its end.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", POLL_ENV: "1.0"}
    epochs = 40
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), str(epochs)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    ckpts: list = []
    deadline = time.time() + 240
    while time.time() < deadline and len(ckpts) < 2:  # keep_checkpoints=2
        time.sleep(0.5)
        ckpts = list((tmp_path / "ray").glob("resume-*/checkpoint_*"))
        assert proc.poll() is None, proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
    proc.wait()
    assert ckpts, "no checkpoint was written before the deadline"
    assert not list(tmp_path.glob("resume-*/final/done.json"))
    # the resumed job need not be slow: the default poll (0.1 s) runs its remaining epochs in seconds
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(epochs)],
        cwd=ROOT,
        env={**env, POLL_ENV: "0.1"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "resumed after epoch" in out
    first = int(out.split("resumed after epoch")[1].split()[0])
    assert first >= 1
    epochs_seen = json.loads(out.split("EPOCHS")[1].splitlines()[0].strip())
    assert epochs_seen == list(range(epochs))  # nothing lost, nothing repeated in the history
    assert (
        f"epoch {first}/{epochs}" not in out.split("resumed after epoch")[1]
    )  # the finished epochs were not rerun


def test_a_stage_reads_typed_settings_from_its_config_or_a_mapping():
    """A stage's settings are its typed Params: built from the dataclass or from a plain mapping
    (types coerced, unknown keys refused with the stage named), with one cache key either way."""
    from cytoray.errors import ConfigError
    from cytoray.generators.gan import CGANParams
    from cytoray.training.stage import StageSpec

    typed = CGANStage(CGANParams(lam=3.0, size=32, in_ch=4))
    mapped = CGANStage({**stage_params(CGANConfig(lam=3.0), 32), "in_ch": 4})
    assert isinstance(mapped.cfg, CGANParams) and mapped.cfg.lam == 3.0 and mapped.cfg.in_ch == 4
    assert typed.generator_kwargs() == mapped.generator_kwargs()
    key = lambda s: StageSpec("cgan", s, train={}, val=None, fixed={}, data_key="d").key  # noqa: E731
    assert key(typed) == key(mapped)
    assert key(typed) != key(CGANStage(CGANParams(lam=4.0, size=32, in_ch=4)))
    with pytest.raises(ConfigError, match="cgan stage settings: unknown key 'lamda'"):
        CGANStage({**stage_params(CGANConfig(), 32), "lamda": 3.0})
    with pytest.raises(ConfigError, match="cgan stage settings.g_base: expected an integer"):
        CGANStage({**stage_params(CGANConfig(), 32), "g_base": "wide"})
