"""Refined simulation (Hou et al. 2019): initial synthesis from a reference tile, the refiner GAN,
the segmenter, the generator under Ray Train, `cytoray segment`, the study's data and table.

Real images here are the ones a package ships: skimage's IHC tile (a reference with haematoxylin
nuclei and brown DAB) and stardist's fluorescence micrograph with hand-checked masks (inverted to
dark nuclei on a bright field). The embedded H&E simulator plays "real" H&E.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cytoray.config import from_dict, load, to_dict, to_plain
from cytoray.data.folder import ImageSet
from cytoray.data.refsim import (
    Reference,
    SynthesisConfig,
    cut_tiles,
    initial_image,
    initial_images,
    load_tiles,
    measure,
    split_groups,
)
from cytoray.errors import ConfigError, DataError
from cytoray.generators.history import HistoryBuffer
from cytoray.generators.refined_sim import RefinedSim, RefinedSimConfig, random_crops
from cytoray.generators.refined_stage import RefinedSimStage, example_weights, realism_judge
from cytoray.nets.images import to_unit
from cytoray.training.stage import amp_context

ROOT = Path(__file__).resolve().parents[1]
CPU, AMP = torch.device("cpu"), amp_context(torch.device("cpu"), False)


def ihc_tile(size: int = 256) -> np.ndarray:
    import skimage.data
    from PIL import Image

    return np.asarray(
        Image.fromarray(skimage.data.immunohistochemistry()).resize((size, size), Image.BICUBIC)
    )


def stardist_tiles(side: int = 256, tile: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """stardist's micrograph at `side` px, inverted to dark nuclei on white, cut in tiles; its masks."""
    from PIL import Image

    from cytoray.masks import stardist_reference

    img, mask = stardist_reference()
    img = np.asarray(Image.fromarray(255 - img).resize((side, side), Image.BICUBIC))
    mask = np.asarray(Image.fromarray(mask).resize((side, side), Image.NEAREST))
    return np.stack([t for *_, t in cut_tiles(img, tile)]), np.stack(
        [t for *_, t in cut_tiles(mask, tile)]
    )


def image_set(images: np.ndarray, masks: np.ndarray | None = None, prefix: str = "t") -> ImageSet:
    n = len(images)
    return ImageSet(
        images,
        np.zeros(n, np.int64),
        ("tissue",),
        [f"{prefix}{i}" for i in range(n)],
        [""] * n,
        masks=masks,
    )


def run_epochs(stage, spec_train: dict, epochs: int | None = None):
    """The one loop's epoch logic without Ray: order, batches of the stage's size, train_step."""
    torch.manual_seed(0)
    train = stage.prepare(spec_train, CPU)
    models, gen = stage.build(CPU), stage.rng(CPU, 0, 0)
    opts = stage.optimizers(models)
    for epoch in range(stage.epochs if epochs is None else epochs):
        order = stage.order(train, epoch, 0)
        for i in range(0, len(order) - 1, stage.batch_size):
            idx = order[i : i + stage.batch_size]
            stage.train_step(models, opts, {k: v[idx] for k, v in train.items()}, gen, AMP)
    return models


# ----------------------------------------------------------------------------- initial synthesis


def test_reference_inpaints_nuclei_out_and_measures_them():
    from skimage.color import rgb2hed

    from cytoray.data.refsim import otsu_haematoxylin

    tile = ihc_tile()
    ref = measure(tile[None], 0)[0]
    nuclei = otsu_haematoxylin(tile)
    bg_rgb = np.clip(np.exp(-ref.background) * 255, 0, 255).astype(np.uint8)
    h_tile, h_bg = rgb2hed(tile)[..., 0], rgb2hed(bg_rgb)[..., 0]
    assert h_bg[nuclei].mean() < h_tile[nuclei].mean() - 0.3 * (
        h_tile[nuclei].mean() - h_tile[~nuclei].mean()
    )  # nuclei gone
    assert np.abs(h_bg[~nuclei] - h_tile[~nuclei]).mean() < 0.01  # the rest untouched
    assert 2.0 <= ref.radius <= 12 and 0.05 < ref.cover < 0.6
    with pytest.raises(DataError, match="finds no nuclei"):
        Reference.from_tile(np.full((64, 64, 3), 240, np.uint8), np.random.default_rng(0))


def test_initial_images_have_exact_masks_drawn_per_image():
    from skimage.color import rgb2hed

    refs, cfg = measure(ihc_tile()[None], 0), SynthesisConfig()
    imgs, masks = initial_images(refs, np.zeros(12, int), 64, 0, cfg)
    assert imgs.shape == (12, 64, 64, 3) and imgs.dtype == np.uint8 and masks.dtype == bool
    again, _ = initial_images(refs, np.zeros(12, int), 64, 0, cfg)
    assert np.array_equal(imgs, again)  # seeded
    cover = masks.mean((1, 2))
    assert cover.min() > 0 and cover.max() > 2 * cover.min()  # density and size drawn per image
    h = np.stack([rgb2hed(im)[..., 0] for im in imgs])
    assert h[masks].mean() > h[~masks].mean() + 0.02  # the mask marks the nuclear stain
    # clutter is drawn after the nuclei: same nuclei, same mask, different pixels
    a = initial_image(refs[0], 64, np.random.default_rng(3), dataclasses.replace(cfg, clutter=0.0))
    b = initial_image(refs[0], 64, np.random.default_rng(3), dataclasses.replace(cfg, clutter=2.0))
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[0], b[0])


# ----------------------------------------------------------------------------- networks and pieces


def test_refiner_starts_as_identity_and_discriminator_sees_style():
    from cytoray.nets.refiner import Refiner, StyleDiscriminator

    x, ref = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 24, 24) * 2 - 1
    r = Refiner(width=8, blocks=2, style_dim=4)
    assert torch.allclose(
        r(x, ref), x
    )  # zero last conv: the identity the self-regularisation asks for
    r.out.weight.data.normal_(0, 1)
    y = r(x, ref)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.allclose(y, x)
    assert not torch.allclose(y, r(x, -ref))  # conditioned on the reference
    d = StyleDiscriminator(base=8, n_layers=2, style_dim=4)
    assert d(x, ref).shape[:2] == (2, 1)


def test_example_weights_and_history_buffer():
    p = torch.tensor([0.01, 0.2, 0.5, 0.6, 0.99])
    w = example_weights(p, 0.2, 2.0)
    assert torch.allclose(w, torch.tensor([0.2, 0.25, 1.0, 1.5, 2.0]))  # p/(1-p), clipped
    buf, g = HistoryBuffer(4, (6, 2, 2), "fraction", 0.5), torch.Generator().manual_seed(0)
    first = torch.ones(4, 6, 2, 2)
    assert (
        torch.equal(buf.query(first, g), first) and int(buf.count) == 4
    )  # empty history: the batch as it is
    out = buf.query(torch.zeros(4, 6, 2, 2), g)
    assert out[:2].eq(1).all() and out[2:].eq(0).all()  # half from the history
    old = HistoryBuffer(
        4, (6, 2, 2), "fraction", 0.5
    )  # a checkpoint from before the buffers were one ("items")
    old.load_state_dict({"items": torch.full((4, 6, 2, 2), 7.0), "count": torch.tensor(4)})
    assert old.images.eq(7).all() and int(old.count) == 4
    with pytest.raises(ValueError, match="policy must be one of fraction, swap"):
        HistoryBuffer(4, (6, 2, 2), "half")


def test_config_rejects_what_cannot_run():
    with pytest.raises(
        ConfigError, match="patch=36: must be >= 16 and divisible by 2\\*\\*segmenter.depth=8"
    ):
        from_dict(RefinedSimConfig, {"patch": 36}, "t.yaml")
    with pytest.raises(ConfigError, match="weight_min=3.0, weight_max=2.0"):
        from_dict(RefinedSimConfig, {"segmenter": {"weight_min": 3.0}}, "t.yaml")
    with pytest.raises(ConfigError, match="synthesis.cover"):
        from_dict(RefinedSimConfig, {"synthesis": {"cover": [2.0, 1.0]}}, "t.yaml")
    small = image_set(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(ConfigError, match="generator.patch=32 is larger than the 16 px"):
        RefinedSim.check(small, small, RefinedSimConfig())


# ----------------------------------------------------------------------------- training (no Ray)


def test_refiner_makes_images_more_realistic():
    """IHC-textured initial images (brown DAB, blue nuclei) against real H&E (the simulator): a
    discriminator trained on real vs initial calls the refined images fake far less often."""
    from cytoray.data.source import simulated_set
    from cytoray.nets.images import from_unit

    cfg = from_dict(
        RefinedSimConfig,
        {
            "pool": 96,
            "schedule": {"discriminator_epochs": 1, "joint_epochs": 3, "segmenter_epochs": 0},
        },
    )
    refs, real = measure(ihc_tile()[None], 0), simulated_set("histology", 24, 64, 0).images
    rng, n, held = np.random.default_rng(0), cfg.pool, 64
    init, masks = initial_images(refs, np.zeros(n + held, int), 32, 0, cfg.synthesis)
    real_c, style = (
        random_crops(real, rng.integers(0, len(real), n + held), 32, rng) for _ in range(2)
    )
    stage = RefinedSimStage({**to_plain(cfg), "size": 32})
    models = run_epochs(
        stage,
        {
            "init": to_unit(init[:n]),
            "mask": masks[:n, None].astype(np.float32),
            "real": to_unit(real_c[:n]),
            "style": to_unit(style[:n]),
        },
    )
    with torch.no_grad():
        refined = from_unit(
            models["R"].eval()(
                torch.from_numpy(to_unit(init[n:])), torch.from_numpy(to_unit(style[n:]))
            )
        )
    acc_initial, acc_refined = realism_judge(real_c[n:], init[n:], refined)
    assert acc_initial >= 0.9 and acc_refined <= acc_initial - 0.2, (acc_initial, acc_refined)
    assert np.abs(refined.astype(float) - init[n:]).mean() > 5  # it did refine


@pytest.mark.parametrize("source", ["stardist", "simulator"])
def test_segmenter_beats_its_untrained_self_on_held_back_images(source):
    """Trained on initial images textured from reference tiles (stardist's micrograph, or simulator
    H&E), S segments held-back images of the same source (stardist tiles with hand-checked masks;
    simulator images of another seed, exact masks) far better than untrained."""
    from cytoray.data.source import simulated_set
    from cytoray.metrics.segmentation import dice

    if source == "stardist":
        tiles, tmasks = stardist_tiles()
        ref, held = tiles[:8], image_set(tiles[8:], tmasks[8:], "v")
    else:
        ref, sim = simulated_set("histology", 8, 64, 0).images, simulated_set("histology", 8, 64, 5)
        held = image_set(sim.images, sim.masks, "v")
    cfg = from_dict(
        RefinedSimConfig,
        {
            "pool": 128,
            "holdout": 8,
            "refiner": {"enabled": False},
            "schedule": {"discriminator_epochs": 0, "joint_epochs": 0, "segmenter_epochs": 4},
        },
    )
    (spec,) = RefinedSim.stages(image_set(ref), held, cfg, "test", 0)
    stage = spec.stage
    assert stage.keep == ("S",) and stage.epochs == 4
    torch.manual_seed(0)
    untrained = stage.build(CPU)["S"]
    trained = run_epochs(stage, spec.train)["S"]

    def pooled(net, x, m):
        return dice(stage.segment(net.eval(), torch.from_numpy(to_unit(x)))[:, 0].numpy(), m)

    before, after = (
        pooled(untrained, held.images, held.masks),
        pooled(trained, held.images, held.masks),
    )
    assert after > before + 0.15 and after > 0.5, (before, after)
    metrics = stage.validate({"S": trained}, stage.prepare(spec.val, CPU), AMP)
    assert set(metrics) == {"val_dice", "val_dice_synthetic"} and metrics["val_dice"] > 0.4


def test_phases_follow_the_schedule_and_selection_skips_the_refiner_warm_up():
    cfg = from_dict(
        RefinedSimConfig,
        {
            "schedule": {
                "refiner_epochs": 1,
                "discriminator_epochs": 1,
                "joint_epochs": 2,
                "segmenter_epochs": 1,
            }
        },
    )
    stage = RefinedSimStage({**to_plain(cfg), "size": 64})
    assert stage.epochs == 5 and [stage.phase(e) for e in range(5)] == [
        "refiner",
        "discriminator",
        "joint",
        "joint",
        "segmenter",
    ]
    assert stage.keep == ("R", "S")
    keys = [stage.selection({"val_dice": d}, e) for e, d in enumerate([0.9, 0.5, 0.7, 0.6, 0.65])]
    assert min(keys) == keys[2]  # the best validation Dice among epochs where S trains
    raw = RefinedSimStage(
        {
            **to_plain(
                dataclasses.replace(cfg, refiner=dataclasses.replace(cfg.refiner, enabled=False))
            ),
            "size": 64,
        }
    )
    assert (
        raw.epochs == 4 and raw.phase(0) == "segmenter"
    )  # as many S epochs as the refined variant gives S


# ----------------------------------------------------------------------------- real tiles and the study's data


def test_real_folder_layouts_tiles_and_group_splits(tmp_path):
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp_path / "b" / sub).mkdir(parents=True)
    for i in range(5):  # BreCaHAD's layout: images/ + masks/ (JPEG masks, threshold 127)
        img = (np.random.default_rng(i).uniform(0, 255, (100, 140, 3))).astype(np.uint8)
        m = np.zeros((100, 140), np.uint8)
        m[20:40, 30:60] = 250
        Image.fromarray(img).save(tmp_path / "b" / "images" / f"{i}.jpg")
        Image.fromarray(m).save(tmp_path / "b" / "masks" / f"{i}.jpg")
    ds = load_tiles(tmp_path / "b", scale=0.5, tile=32)
    assert ds.images.shape == (10, 32, 32, 3) and ds.masks.shape == (
        10,
        32,
        32,
    )  # 50x70 → two 32 px tiles each
    assert ds.masks.any() and len(set(ds.groups)) == 5
    sp = split_groups(ds.groups, [3, 1, 1], 0)
    assert sorted(np.concatenate(list(sp.values()))) == list(range(10))
    assert not {ds.groups[i] for i in sp["test"]} & {
        ds.groups[i] for i in sp["train"]
    }  # a source image in one split only
    (tmp_path / "b" / "masks" / "4.jpg").unlink()
    with pytest.raises(DataError, match="4.jpg: no nucleus mask"):
        load_tiles(tmp_path / "b", scale=0.5, tile=32)
    with pytest.raises(DataError, match="smaller than one 128 px tile"):
        load_tiles(tmp_path / "b", scale=0.5, tile=128, need_masks=False)


def test_study_configs_document_every_default_and_the_space_is_valid():
    from cytoray.experiments.segmentation import SegmentationStudyConfig
    from cytoray.training.search import load_search_space

    cfg = load(SegmentationStudyConfig, ROOT / "configs/studies/refined_segmentation.yaml")
    assert to_dict(cfg) == to_dict(SegmentationStudyConfig())
    space = load_search_space(ROOT / "configs/search/refined_segmentation.yaml", cfg)
    assert {"generator.refiner.hard_weight", "generator.segmenter.weight_min"} <= set(space.space)
    with pytest.raises(ConfigError, match="this study trains 'refined-sim'"):
        load(SegmentationStudyConfig, None, ["generator.name=syncgan"])
    with pytest.raises(ConfigError, match="compare=true needs data.n_splits >= 2"):
        load(SegmentationStudyConfig, None, ["data.n_splits=1"])


def test_comparison_table_states_intervals_and_paired_tests():
    from cytoray.experiments.segmentation import ROWS, comparison_table
    from cytoray.metrics.classification import holm, mean_ci, paired_test

    rng = np.random.default_rng(0)
    scores = {r: list(0.5 + 0.05 * k + rng.normal(0, 0.01, 4)) for k, r in enumerate(ROWS)}
    tests = {r: paired_test(scores["refined_hard"], scores[r]) for r in ROWS if r != "refined_hard"}
    for r, p in holm({r: t["p_value"] for r, t in tests.items()}).items():
        tests[r]["p_holm"] = p
    c = {
        "scores": scores,
        "cells": {r: mean_ci(v) for r, v in scores.items()},
        "tests": tests,
        "n_splits": 4,
        "n_test": [6] * 4,
        "probe": {"initial": [0.9], "refined": [0.7]},
        "syncgan_method": "stain",
    }
    md, csv = comparison_table(c, "somewhere")
    assert "Otsu on haematoxylin (floor)" in md and "(method=stain)" in md and "over 4 seeded" in md
    raw = next(line for line in md.splitlines() if line.startswith("| segmenter on raw simulation"))
    assert (
        f"{100 * np.mean(scores['raw']):.1f} ±" in raw
        and f"{100 * tests['raw']['mean_diff']:+.1f}" in raw
    )
    assert (
        len(csv) == 1 + len(ROWS) and csv[0][-1] == "split_3" and "initial 0.90, refined 0.70" in md
    )


# ----------------------------------------------------------------------------- the segmenter as SynCGAN's mask source


def tiny_segmenter(out: Path, seed: int, steps: int = 20) -> Path:
    """A 2-level segmenter bundle (what `cytoray segment` loads), trained a few steps on simulator
    H&E with exact masks; seeds give different masks."""
    from cytoray.data.source import simulated_set
    from cytoray.masks.nucleus_net import write_segmenter_bundle
    from cytoray.nets import UNet

    torch.manual_seed(seed)
    kw = dict(in_ch=3, out_ch=1, base=4, depth=2, norm="batch", dropout=0.0, out_act="none")
    net, ds = UNet(**kw), simulated_set("histology", 8, 32, 100 + seed)
    x, y = (
        torch.from_numpy(to_unit(ds.images)),
        torch.from_numpy(ds.masks[:, None].astype(np.float32)),
    )
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()
    return write_segmenter_bundle(
        out, net.state_dict(), kw, 0.5, 1.0, {"trained_on": "simulator (test)"}
    )


def test_a_segmenter_is_the_mask_source_of_syncgan(tmp_path):
    import shutil

    from cytoray.data.source import simulated_set
    from cytoray.generators.gan import masks_to_unit
    from cytoray.generators.syncgan import SynCGAN, SynCGANConfig, masks_key
    from cytoray.masks import MasksConfig
    from cytoray.masks.nucleus_net import load_segmenter

    with pytest.raises(
        ConfigError, match=r"masks\.segmenter is not set: masks\.method=segmenter needs [^\n]+$"
    ):
        load(SynCGANConfig, None, ["masks.method=segmenter"])
    with pytest.raises(ConfigError, match="set masks.method=segmenter or drop masks.segmenter"):
        load(SynCGANConfig, None, [f"masks.segmenter={tmp_path}"])
    a, b = tiny_segmenter(tmp_path / "a", 0), tiny_segmenter(tmp_path / "b", 1)
    ds = simulated_set("histology", 8, 64, 0)
    train, val = ds.subset(range(0, 8, 2)), ds.subset(range(1, 8, 2))
    cfg = SynCGANConfig(
        masks=MasksConfig(method="segmenter", segmenter=str(a), labels="nucleus"), prior="gan"
    )
    # 1. The mask GANs and the CGAN train on exactly what the segmenter predicts.
    specs = {s.label: s for s in SynCGAN.stages(train, val, cfg, "k", 0)}
    want_train, want_val = (load_segmenter(a).masks(x.images) for x in (train, val))
    # (with label maps, the default, the nucleus label is the segmenter's mask)
    cell = SynCGAN.stages(
        train,
        val,
        dataclasses.replace(cfg, masks=dataclasses.replace(cfg.masks, labels="cell")),
        "k",
        0,
    )
    assert np.array_equal(cell[-1].train["mask"][:, 2], masks_to_unit(want_train)[:, 0])
    assert want_train.any() and not want_train.all()  # a mask, not a blank
    assert np.array_equal(specs["cgan"].train["mask"], masks_to_unit(want_train))
    assert np.array_equal(specs["cgan"].val["mask"], masks_to_unit(want_val))
    for i, c in enumerate(train.class_names):
        assert np.array_equal(
            specs[f"mask_gan/{c}"].train["mask"], masks_to_unit(want_train[train.labels == i])
        )
    # 2. Cached masks are keyed by the segmenter's content, not its name.
    other = SynCGANConfig(masks=MasksConfig(method="segmenter", segmenter=str(b)))
    assert not np.array_equal(load_segmenter(b).masks(train.images), want_train)
    key_a = masks_key(cfg.masks)
    assert key_a != masks_key(other.masks) and SynCGAN.bundle_key(
        cfg, "k", 0
    ) != SynCGAN.bundle_key(other, "k", 0)
    shutil.copytree(a, tmp_path / "copy")
    assert (
        masks_key(
            MasksConfig(method="segmenter", segmenter=str(tmp_path / "copy"), labels="nucleus")
        )
        == key_a
    )  # same weights: same masks
    shutil.copy2(
        b / "segmenter.pt", a / "segmenter.pt"
    )  # retrained in place: same path, other masks
    assert (
        masks_key(cfg.masks) != key_a
        and specs["cgan"].data_key != SynCGAN.stages(train, val, cfg, "k", 0)[-1].data_key
    )


def test_nucleus_segmenter_registers_as_a_segmenter_pyfunc(tmp_path, monkeypatch, capsys):
    """Registered as its own kind: the segmenter pyfunc predicts masks (or probabilities) from uint8
    images; `cytoray segment` and `masks.segmenter` take NAME@ALIAS from the same registry."""
    import mlflow
    from PIL import Image

    from cytoray.cli import main
    from cytoray.data.source import simulated_set
    from cytoray.experiments.segmentation import SegmentationStudyConfig, register_chosen
    from cytoray.generators.syncgan import masks_key, nucleus_masks
    from cytoray.masks import MasksConfig
    from cytoray.masks.nucleus_net import load_segmenter
    from cytoray.tracking.mlflow_utils import setup

    monkeypatch.chdir(tmp_path)
    uri = setup("segmenter-registry-test", f"sqlite:///{tmp_path / 'm.db'}")
    bundle = tiny_segmenter(tmp_path / "seg", 0)
    with (
        mlflow.start_run()
    ):  # the refiner's slot takes the same folder: only the kinds are under test here
        reg = register_chosen(
            SegmentationStudyConfig(), bundle, bundle, 0.5, {"test_dice": 0.4}, "h", smoke=False
        )
    assert reg["nucleus-segmenter"] == {"version": "1", "champion": True, "ineligible": None}
    code = {
        n: sorted(
            p.name
            for p in Path(
                mlflow.artifacts.download_artifacts(f"models:/{n}/1", dst_path=str(tmp_path / n))
            ).rglob("*.py")
        )
        for n in ("nucleus-segmenter", "refiner")
    }
    assert code == {"nucleus-segmenter": ["segmenter.py"], "refiner": ["generator.py"]}
    assert not list(
        (tmp_path / "nucleus-segmenter").rglob("*.pkl")
    )  # models-from-code: nothing pickled
    # 1. The pyfunc: uint8 images in, 0/1 masks (or probabilities) out, as the bundle segments them.
    model = mlflow.pyfunc.load_model("models:/nucleus-segmenter@champion")
    imgs = simulated_set("histology", 3, 32, 7).images
    seg = load_segmenter(bundle)
    masks = np.asarray(model.predict(imgs))
    assert (
        masks.dtype == np.uint8
        and masks.shape == (3, 32, 32)
        and np.array_equal(masks, seg.masks(imgs))
    )
    prob = np.asarray(model.predict(imgs, params={"output": "probability"}))
    assert (
        prob.dtype == np.float32
        and 0 <= prob.min()
        and prob.max() <= 1
        and np.array_equal(prob > seg.threshold, masks.astype(bool))
    )
    # 2. SynCGAN's masks from NAME@ALIAS: the same masks and cache key as the folder (same content).
    ds = simulated_set("histology", 4, 32, 8)
    by_name, by_folder = (
        MasksConfig(method="segmenter", segmenter=r)
        for r in ("nucleus-segmenter@champion", str(bundle))
    )
    assert np.array_equal(nucleus_masks(ds, by_name), nucleus_masks(ds, by_folder)) and masks_key(
        by_name
    ) == masks_key(by_folder)
    # 3. `cytoray segment NAME@ALIAS` still works.
    (tmp_path / "in").mkdir()
    Image.fromarray(imgs[0]).save(tmp_path / "in" / "a.png")
    assert (
        main(
            [
                "segment",
                "nucleus-segmenter@champion",
                str(tmp_path / "in"),
                "--out",
                str(tmp_path / "out"),
                "--tracking-uri",
                uri,
            ]
        )
        == 0
    )
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "out" / "a.png")) > 0, masks[0].astype(bool)
    )


# ----------------------------------------------------------------------------- under Ray Train


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    """refined-sim trained for one epoch per phase on simulator H&E, under Ray Train (the one loop)."""
    from cytoray.data.source import simulated_set
    from cytoray.training.config import RunConfig

    tmp = tmp_path_factory.mktemp("refined")
    ds = simulated_set("histology", 12, 64, 0)
    train, val = ds.subset(range(0, 12, 2)), ds.subset(range(1, 12, 2))
    cfg = from_dict(
        RefinedSimConfig,
        {
            "pool": 32,
            "holdout": 8,
            "schedule": {"discriminator_epochs": 1, "joint_epochs": 1, "segmenter_epochs": 1},
        },
    )
    out, res = RefinedSim.train(
        dataclasses.replace(train, masks=None),
        val,
        cfg,
        tmp / "bundle",
        tmp / "cache",
        "k",
        RunConfig(storage_path=str(tmp / "ray")),
    )
    return out, res, val


def test_trained_under_ray_train_sampled_and_used_as_a_policy(trained_bundle):
    from cytoray.classify.policies import compose_training_set
    from cytoray.generators import load_bundle

    out, res, val = trained_bundle
    hist = res["refined-sim"].history
    assert (
        [h["epoch"] for h in hist] == [0, 1, 2]
        and "d_acc_refined" in hist[-1]
        and "val_dice" in hist[-1]
    )
    gen = load_bundle(out)
    assert isinstance(gen, RefinedSim) and set(gen.classes) == {"benign", "malignant"}
    imgs, masks = gen.sample(5, "malignant", seed=1)
    assert (
        imgs.shape == (5, 64, 64, 3)
        and imgs.dtype == np.uint8
        and masks.shape == (5, 64, 64)
        and masks.dtype == bool
    )
    assert masks.any(axis=(1, 2)).all() and np.array_equal(
        gen.sample(5, "malignant", seed=1)[0], imgs
    )
    assert gen.segment(val.images).shape == val.masks.shape
    tr = compose_training_set("orig+refined-sim", val, 1.0, {"refined-sim": gen}, rng_seed=0)
    assert (
        len(tr) == 2 * len(val) and tr.masks is not None
    )  # real + synthetic, exact masks carried along
    assert (out / "grids").is_dir() and (out / "history.json").is_file()


def test_cytoray_segment_writes_a_mask_per_image(trained_bundle, tmp_path, capsys):
    from PIL import Image

    from cytoray.cli import main

    out, _, _ = trained_bundle
    tiles, _ = stardist_tiles(side=192, tile=96)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(tiles[0]).save(tmp_path / "in" / "a.jpg")
    Image.fromarray(tiles[1][:80, :90]).save(tmp_path / "in" / "sub" / "b.png")
    assert main(["segment", str(out), str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    assert "wrote 2 nucleus masks" in capsys.readouterr().out
    a, b = (np.asarray(Image.open(tmp_path / "out" / p)) for p in ("a.png", "sub/b.png"))
    assert a.shape == (96, 96) and b.shape == (80, 90) and set(np.unique(a)) <= {0, 255}
    # bad input: one line, exit 2, nothing written
    db = f"sqlite:///{tmp_path / 'none.db'}"
    for argv, msg in (
        ([str(tmp_path / "in"), str(tmp_path / "in")], "not a nucleus segmenter"),
        ([str(out), str(tmp_path / "missing")], "missing: not a folder"),
        ([str(out), str(tmp_path / "in"), "--scale", "0"], "--scale 0.0: give a resize factor"),
        (
            ["nucleus-segmenter", str(tmp_path / "in"), "--tracking-uri", db],
            "give a registered model as NAME@ALIAS",
        ),
        (
            ["nucleus-segmenter@champion", str(tmp_path / "in"), "--tracking-uri", db],
            "no MLflow store there",
        ),
    ):
        assert main(["segment", *argv, "--out", str(tmp_path / "o2")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cytoray: error: ") and msg in err and "\n" not in err, err
    assert not (tmp_path / "o2").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("single_ray_instance")
def test_study_smoke_end_to_end(tmp_path):
    import json

    from conftest import run_python

    r = run_python(
        [
            "studies/refined_segmentation.py",
            "--smoke-test",
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
        ],
        ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    table = (tmp_path / "out" / "comparison.md").read_text()
    for row in (
        "Otsu on haematoxylin",
        "SynCGAN unsupervised masks",
        "raw simulation",
        "refined simulation",
        "refined + hard",
    ):
        assert row in table
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert 0 <= best["test_dice"] <= 1 and "not champion: a --smoke-test run" in r.stdout
    assert (tmp_path / "out" / "best_segmenter" / "segmenter.json").is_file()
