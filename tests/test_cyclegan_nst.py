"""Histology → cytology: CycleGAN stage and generator, Gatys NST with VGG-19 features, the study."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blob_image, write_png

from cytoray.data.folder import load_folder
from cytoray.data.source import simulated_set
from cytoray.errors import CytorayError, DataError
from cytoray.generators.cyclegan import (
    CycleGANConfig,
    CycleGANStage,
    loop_steps_per_epoch,
    lr_factor,
    stage_params,
)
from cytoray.generators.domains import DomainPair, align_unpaired, check_domains
from cytoray.generators.history import HistoryBuffer
from cytoray.generators.nst import NST, NSTConfig, build_features, stylise
from cytoray.nets.images import to_unit
from cytoray.training.config import RunConfig
from cytoray.training.stage import amp_context

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
AMP = amp_context(CPU, False)


def _stage(n_train: int = 8, **over):
    cfg = dataclasses.replace(CycleGANConfig(g_base=8, d_base=8, n_blocks=2, batch_size=4), **over)
    return CycleGANStage(stage_params(cfg, 32, n_train))


def _domains(n: int = 8, size: int = 32) -> dict[str, torch.Tensor]:
    h, c = simulated_set("histology", n, size, 1), simulated_set("cytology", n, size, 0)
    return {"A": torch.from_numpy(to_unit(h.images)), "B": torch.from_numpy(to_unit(c.images))}


# ----------------------------------------------------------------------------- CycleGAN pieces


@pytest.mark.parametrize("arch", ["resnet", "unet"])
def test_translators_and_discriminators_shapes(arch):
    stage = _stage(arch=arch)
    models = stage.build(CPU)
    x = torch.randn(2, 3, 32, 32)
    for k in ("G", "F"):
        y = models[k](x)
        assert y.shape == x.shape and y.abs().max() <= 1.0  # tanh images
    for k in ("D_A", "D_B"):
        assert models[k](x).shape == (2, 1, 2, 2)  # 70x70 PatchGAN on 32 px → 2x2 logits
        assert {"pool.images", "pool.count"} <= set(
            models[k].state_dict()
        )  # the pool is checkpointed
    assert stage.generator_kwargs()["arch"] == arch


@pytest.mark.parametrize("gan_mode", ["lsgan", "bce"])
def test_cycle_loss_falls(gan_mode):
    torch.manual_seed(0)
    stage = _stage(gan_mode=gan_mode, lr=1e-3)
    models, batch = stage.build(CPU), _domains()
    opts, gen = stage.optimizers(models), torch.Generator().manual_seed(0)
    hist = [stage.train_step(models, opts, batch, gen, AMP) for _ in range(30)]
    assert all(np.isfinite(h["loss_g"]) and np.isfinite(h["loss_d"]) for h in hist)
    assert np.mean([h["cycle"] for h in hist[-5:]]) < 0.75 * np.mean([h["cycle"] for h in hist[:3]])
    assert np.mean([h["identity"] for h in hist[-5:]]) < np.mean([h["identity"] for h in hist[:3]])
    grid = stage.grid(models, {"A": batch["A"][:3], "B": batch["B"][:3]})
    assert grid.dtype == np.uint8 and grid.shape[2] == 3


def test_identity_weight_zero_skips_the_term():
    stage = _stage(lambda_identity=0.0)
    models = stage.build(CPU)
    h = stage.train_step(
        models, stage.optimizers(models), _domains(4), torch.Generator().manual_seed(0), AMP
    )
    assert h["identity"] == 0.0


def test_image_pool_fills_then_mixes_history():
    gen = torch.Generator().manual_seed(0)
    pool = HistoryBuffer(4, (1, 1, 1), "swap")
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first, gen), first)  # filling: fakes pass through and are stored
    assert int(pool.count) == 4 and torch.equal(pool.images, first)
    swapped = 0
    for step in range(50):
        new = torch.full((4, 1, 1, 1), 100.0 + step)
        out = pool.query(new, gen)
        swapped += int((out != new).sum())
        assert torch.all((out == new) | (out < new))  # each answer is this fake or an older one
    assert 0.35 < swapped / 200 < 0.65  # about half the answers come from the history
    assert pool.images.min() >= 100  # the old fakes were replaced by newer ones
    assert torch.equal(
        HistoryBuffer(0, (1, 1, 1), "swap").query(first, gen), first
    )  # pool_size 0: no history


def test_lr_schedule_linear_decay_over_second_half():
    assert [round(lr_factor(e, 10, 0.5), 4) for e in range(10)] == [
        1,
        1,
        1,
        1,
        1,
        0.8333,
        0.6667,
        0.5,
        0.3333,
        0.1667,
    ]
    assert all(lr_factor(e, 7, 0.0) == 1.0 for e in range(7))
    assert (
        loop_steps_per_epoch(13, 4) == 3
        and loop_steps_per_epoch(14, 4) == 4
        and loop_steps_per_epoch(14, 4, 2) == 2
    )
    # Inside the stage: n_train 8, batch 4 → 2 steps an epoch; 4 epochs → epochs 2 and 3 decay.
    stage = _stage(n_train=8, epochs=4, lr=1e-3)
    models, batch = stage.build(CPU), _domains(4)
    opts, gen = stage.optimizers(models), torch.Generator().manual_seed(0)
    lrs = [stage.train_step(models, opts, batch, gen, AMP)["lr"] for _ in range(8)]
    assert lrs == pytest.approx([1e-3] * 4 + [1e-3 * 2 / 3] * 2 + [1e-3 / 3] * 2)
    assert opts["D"].param_groups[0]["lr"] == pytest.approx(1e-3 / 3)


def test_resume_from_state_dicts_is_exact():
    """The pools (module buffers) and the lr schedule (Adam's step count) live in what the
    shared loop checkpoints, so a resumed stage continues bit for bit."""
    torch.manual_seed(0)
    stage = _stage(n_train=4, epochs=3, pool_size=3, batch_size=2)
    batch = {k: v[:2] for k, v in _domains(4).items()}
    models = stage.build(CPU)
    opts, gen = stage.optimizers(models), torch.Generator().manual_seed(0)
    for _ in range(3):
        stage.train_step(models, opts, batch, gen, AMP)
    snap = copy.deepcopy(
        (
            {k: m.state_dict() for k, m in models.items()},
            {k: o.state_dict() for k, o in opts.items()},
        )
    )
    rng = gen.get_state()
    cont = [stage.train_step(models, opts, batch, gen, AMP) for _ in range(3)]
    models2 = stage.build(CPU)
    for k, m in models2.items():
        m.load_state_dict(snap[0][k])
    opts2 = stage.optimizers(models2)
    for k, o in opts2.items():
        o.load_state_dict(snap[1][k])
    gen2 = torch.Generator()
    gen2.set_state(rng)
    resumed = [stage.train_step(models2, opts2, batch, gen2, AMP) for _ in range(3)]
    assert resumed == cont


def test_align_unpaired_uses_every_image():
    a, b = np.arange(5), np.arange(100, 112)
    fa, fb = align_unpaired(a, b, 0)
    assert len(fa) == len(fb) == 12 and set(fa) == set(a) and sorted(fb) == sorted(b)


# ----------------------------------------------------------------------------- NST


def test_nst_style_loss_falls_and_output_differs():
    h, c = simulated_set("histology", 2, 32, 1), simulated_set("cytology", 2, 32, 0)
    cfg = NSTConfig(steps=10)
    feats, _ = build_features(cfg)
    out, hist = stylise(h.images, c.images, feats, cfg)
    assert out.shape == h.images.shape and out.dtype == np.uint8
    assert hist[-1]["style"] < 0.2 * hist[0]["style"]
    assert hist[0]["content"] == 0.0 < hist[-1]["content"]  # started from the content image
    assert np.abs(out.astype(float) - h.images).mean() > 5


def test_nst_random_features_are_refused_unless_allowed_then_named_and_warned(tmp_path, capsys):
    from cytoray.config import ConfigError, from_dict

    with pytest.raises(
        ConfigError, match="--allow-random-features"
    ):  # refused before anything runs
        from_dict(NSTConfig, {"features": "random"}, "study.yaml")
    h, c = simulated_set("histology", 20, 32, 1), simulated_set("cytology", 20, 32, 0)
    cfg = NSTConfig(features="random", allow_random_features=True, steps=3, random_seed=7)
    out, stages = NST.train(
        DomainPair(h, c), DomainPair(h, c), cfg, tmp_path / "nst", tmp_path, "k", RunConfig()
    )
    features = json.loads((out / "generator.json").read_text())["features"]
    assert (
        stages == {}
        and features.startswith("vgg19-random-seed7")
        and "RANDOM FEATURES (debug only)" in features
    )
    gen = NST.load(out)
    err = capsys.readouterr().err
    assert "WARNING" in err and "vgg19-random-seed7" in err and "not comparable" in err
    assert gen.features == features
    x, masks = gen.sample(3, "malignant", seed=2)
    assert x.shape == (3, 32, 32, 3) and masks is None
    assert np.array_equal(x, gen.sample(3, "malignant", seed=2)[0])
    with pytest.raises(CytorayError, match="not in this generator"):
        gen.sample(1, "tumour")


def test_nst_defaults_to_real_inception_features(tmp_path, capsys):
    h, c = simulated_set("histology", 20, 32, 1), simulated_set("cytology", 20, 32, 0)
    out, _ = NST.train(
        DomainPair(h, c),
        DomainPair(h, c),
        NSTConfig(steps=2),
        tmp_path / "nst",
        tmp_path,
        "k",
        RunConfig(),
    )
    features = json.loads((out / "generator.json").read_text())["features"]
    assert features.startswith("inception-v3-nv-torchscript") and "RANDOM" not in features
    assert "WARNING" not in capsys.readouterr().err


def test_nst_local_vgg_weights_are_loaded_and_named(tmp_path, capsys):
    import torchvision

    sd = {
        k: v
        for k, v in torchvision.models.vgg19(weights=None).state_dict().items()
        if k.startswith("features.")
    }
    path = tmp_path / "vgg19.pth"
    torch.save(sd, path)
    feats, name = build_features(NSTConfig(features="vgg19", vgg_weights=str(path)))
    assert name == f"vgg19-imagenet:{path.resolve()}"
    assert torch.equal(feats.body[0].weight, sd["features.0.weight"]) and torch.equal(
        feats.body[28].weight, sd["features.28.weight"]
    )
    assert "WARNING" not in capsys.readouterr().err
    assert (
        isinstance(feats.body[4], torch.nn.AvgPool2d) and len(feats.body) == 30
    )  # cut after conv5_1's ReLU
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(CytorayError, match="bad.pth"):
        build_features(NSTConfig(features="vgg19", vgg_weights=str(tmp_path / "bad.pth")))
    with pytest.raises(CytorayError, match="not found"):
        build_features(NSTConfig(features="vgg19", vgg_weights=str(tmp_path / "missing.pth")))


# ----------------------------------------------------------------------------- bad input


def _folder(root: Path, classes: dict[str, int]) -> Path:
    for c, (cls, n) in enumerate(classes.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            write_png(
                root / cls / f"{cls}_{i:02d}.png", blob_image(1000 * c + i + hash(root.name) % 97)
            )
    return root


def test_bad_domains_are_refused_naming_the_folder(tmp_path):
    hist = load_folder(_folder(tmp_path / "hist", {"benign": 10, "malignant": 10}), 32)
    other = load_folder(_folder(tmp_path / "cyto", {"benign": 10, "tumour": 10}), 32)
    with pytest.raises(DataError, match=r"hist.*\['benign', 'malignant'\].*cyto.*'tumour'"):
        check_domains(hist, other, 10)
    few = load_folder(_folder(tmp_path / "few", {"benign": 10, "malignant": 4}), 32)
    with pytest.raises(DataError, match=r"few: cytology class 'malignant' has 4 images"):
        check_domains(hist, few, 10)
    with pytest.raises(DataError, match="no images"):
        check_domains(hist, hist.subset([]), 10)
    from cytoray.config import ConfigError, load
    from cytoray.experiments.histo_to_cyto import HistoToCytoConfig

    with pytest.raises(ConfigError, match="data.size"):  # the cytology (target) domain's size
        load(HistoToCytoConfig, None, ["data.size=32"])


def test_study_refuses_bad_input_before_training(tmp_path):
    (tmp_path / "empty" / "benign").mkdir(parents=True)
    (tmp_path / "empty" / "malignant").mkdir(parents=True)
    cyto = _folder(tmp_path / "cyto", {"benign": 10, "malignant": 10})
    cases = {
        "empty": tmp_path / "empty",
        "few": _folder(tmp_path / "few", {"benign": 3, "malignant": 10}),
    }
    for name, hist in cases.items():
        out = tmp_path / f"out_{name}"
        r = subprocess.run(
            [
                sys.executable,
                str(ROOT / "studies/histo_to_cyto.py"),
                "--histology",
                str(hist),
                "--cytology",
                str(cyto),
                "--out",
                str(out),
                "--tracking-uri",
                f"sqlite:///{tmp_path}/m.db",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert (
            r.returncode != 0 and "histo_to_cyto: error:" in r.stderr and str(hist) in r.stderr
        ), r.stderr[-2000:]
        assert "Traceback" not in r.stderr and not (out / "stages").exists()  # nothing trained


# ----------------------------------------------------------------------------- Ray Train + the study


def test_cyclegan_trains_under_ray_and_samples_from_its_bundle(tmp_path):
    from cytoray.data.splits import make_manifest
    from cytoray.generators import get_generator, load_bundle

    h, c = simulated_set("histology", 20, 32, 1), simulated_set("cytology", 24, 32, 0)
    split = {}
    for k, ds in (("h", h), ("c", c)):
        m, _ = make_manifest(ds, [3, 1, 1], 0)
        split[k] = (ds.subset(m.indices("train")), ds.subset(m.indices("val")))
    cfg = CycleGANConfig(epochs=2, g_base=8, d_base=8, n_blocks=2)
    run = RunConfig(sample_every=1, storage_path=str(tmp_path / "ray"))
    train, val = DomainPair(split["h"][0], split["c"][0]), DomainPair(split["h"][1], split["c"][1])
    gen_cls = get_generator("cyclegan")
    out, res = gen_cls.train(train, val, cfg, tmp_path / "bundle", tmp_path / "cache", "k", run)
    assert set(res) == {"cyclegan/benign", "cyclegan/malignant"}
    hist = res["cyclegan/benign"].history
    assert [r["lr"] for r in hist] == pytest.approx(
        [2e-4 * lr_factor(e, 2, 0.5) for e in range(2)]
    )  # schedule under the real loop
    gen = load_bundle(out)
    imgs, masks = gen.sample(5, "malignant", seed=3)
    assert imgs.shape == (5, 32, 32, 3) and imgs.dtype == np.uint8 and masks is None
    assert np.array_equal(imgs, gen.sample(5, "malignant", seed=3)[0])
    t0 = time.perf_counter()
    _, again = gen_cls.train(train, val, cfg, tmp_path / "bundle2", tmp_path / "cache", "k", run)
    assert all(r.cached for r in again.values()) and time.perf_counter() - t0 < 30  # stage cache


@pytest.mark.slow
def test_study_smoke_test_end_to_end(tmp_path):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "studies/histo_to_cyto.py"),
            "--smoke-test",
            "--out",
            str(out),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    print(f"smoke test wall time {time.perf_counter() - t0:.0f}s")
    md = (out / "fid_table.md").read_text()
    rows = [
        line
        for line in md.splitlines()
        if line.startswith("| ") and not line.startswith(("| row", "| ---"))
    ]
    labels = [row.split("|")[1].strip() for row in rows]
    assert labels[:2] == ["real histology", "CycleGAN G(histology)"] and labels[2].startswith(
        "NST [inception-v3-nv-torchscript"
    )
    csv = (out / "fid_table.csv").read_text().splitlines()
    assert len(csv) == 4 and all(np.isfinite(float(v)) for v in csv[1].split(",")[1:])
    assert {p.name for p in (out / "grids").glob("*.png")} == {"benign.png", "malignant.png"}
    assert "mlflow ui --backend-store-uri" in r.stdout and "RANDOM" not in r.stdout + r.stderr
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["cytoray-histo-to-cyto"])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert (
        len(parents) == 1
    )  # one study run, and one `result: <row>` child per table row (the compare view)
    rows = runs[runs["tags.mlflow.parentRunId"] == parents.iloc[0]["run_id"]]
    assert len(runs) == 1 + len(rows) and sorted(rows["tags.cytoray.result"]) == [
        "row:cyclegan",
        "row:histology",
        "row:nst",
    ]
    assert all(np.isfinite(rows["metrics.fid_test_inception/all"]))
    run = parents.iloc[0]
    assert run["params.nst.features"].startswith("inception-v3-nv-torchscript")
    assert np.isfinite(run["metrics.cyclegan/fid_test_inception/all"]) and np.isfinite(
        run["metrics.histology/fid_test_inception/benign"]
    )


def test_study_script_reads_top_to_bottom():
    spec = importlib.util.spec_from_file_location(
        "histo_to_cyto", ROOT / "studies/histo_to_cyto.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(mod)
    assert "python studies/histo_to_cyto.py" in mod.__doc__ and "--smoke-test" in mod.__doc__
    from cytoray.config import to_dict
    from cytoray.experiments.driver import trial_config
    from cytoray.experiments.histo_to_cyto import HistoToCytoConfig, HistoToCytoStudy
    from cytoray.training.search import load_search_space

    study, base = HistoToCytoStudy(), HistoToCytoConfig()
    s = load_search_space(ROOT / mod.SEARCH, base)
    assert set(s.space) == {
        "generators.cyclegan.lambda_cyc",
        "generators.cyclegan.lambda_identity",
        "generators.nst.content_weight",
        "generators.nst.style_weight",
    }
    assert all(
        "val" in m for m in study.objectives(base)[0]
    )  # the search never sees the test split
    cfg = trial_config(
        study,
        to_dict(base),
        {"generators": {"cyclegan": {"lambda_cyc": 3.0}, "nst": {"style_weight": 1e5}}},
    )
    assert (
        cfg.generators["cyclegan"].lambda_cyc == 3.0 and cfg.generators["nst"].style_weight == 1e5
    )


@pytest.mark.slow
def test_study_search_scores_trials_on_validation_and_logs_children(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "studies/histo_to_cyto.py"),
        "--smoke-test",
        "--search",
        "--out",
        str(tmp_path / "out"),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "[search] best by validation FID" in r.stderr
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["cytoray-histo-to-cyto"])
    parent = runs[runs["tags.mlflow.parentRunId"].isna()].iloc[0]
    under = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    children = under[
        under["tags.cytoray.result"].isna()
    ]  # the trials (the others: one `result: <row>` child per table row)
    assert (
        len(runs) == 1 + 2 + 3 and len(children) == 2
    )  # one parent, one child per trial, one per row
    assert all(np.isfinite(children["metrics.cyclegan/fid_val_inception/all"]))
    logged = [c for c in children.columns if c.startswith("metrics.") and children[c].notna().any()]
    assert logged and not any("test" in c for c in logged)  # trials never see the test split
    best = children.loc[
        children["metrics.cyclegan/fid_val_inception/all"].idxmin(),
        "params.generators.cyclegan.lambda_cyc",
    ]
    assert float(parent["params.best.generators.cyclegan.lambda_cyc"]) == pytest.approx(float(best))
