"""What `masks.segmenter` and `cytoray segment` name: a folder or a registered NAME@ALIAS /
NAME/VERSION, settled once (a study's driver pins it before any trial; SynCGAN resolves an alias
once for its masks and their key), from the store the command line documents."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_refined_sim import tiny_segmenter

from cytoray.config import load, to_dict
from cytoray.errors import ConfigError


def fake_registry(monkeypatch, bundles: dict[str, Path]) -> list[str]:
    """resolve_version/pull without a store: NAME@ALIAS resolves to the next version each call (an
    alias that moves), NAME/VERSION pulls `bundles[VERSION]`. Returns the tracking URI each pull saw."""
    import itertools

    import mlflow

    from cytoray.tracking import registry

    moves, seen = itertools.count(1), []

    def resolve_version(ref: str) -> str:
        return f"{ref.split('@')[0]}/{next(moves)}" if "@" in ref else ref

    def pull(ref: str, dst) -> Path:
        seen.append(mlflow.get_tracking_uri())
        return Path(shutil.copytree(bundles[ref.split("/")[1]], Path(dst) / "bundle"))

    monkeypatch.setattr(registry, "resolve_version", resolve_version)
    monkeypatch.setattr(registry, "pull", pull)
    return seen


def test_a_study_pins_its_segmenter_in_the_driver(tmp_path, monkeypatch):
    """Trials run in their own folder and process: the driver gives them an absolute folder, a
    registered one pulled from the study's store; a bad reference stops the study before Ray."""
    from cytoray.experiments.driver import pin_segmenters, trial_config
    from cytoray.experiments.ratio import RatioStudy, RatioStudyConfig
    from cytoray.generators.syncgan import masks_key
    from cytoray.masks.segmenter import bundle_identity
    from cytoray.tracking.mlflow_utils import setup

    monkeypatch.chdir(tmp_path)
    seg = tiny_segmenter(tmp_path / "seg", 0)

    def study(ref: str) -> RatioStudyConfig:
        return load(
            RatioStudyConfig,
            None,
            ["generator.masks.method=segmenter", f"generator.masks.segmenter={ref}"],
        )

    with pytest.raises(
        ConfigError,
        match=r"masks\.segmenter=runs/seg: no such folder, and not NAME@ALIAS or NAME/VERSION$",
    ):
        study("runs/seg")
    uri = setup(
        "pin-test", f"sqlite:///{tmp_path / 'm.db'}"
    )  # the study's store (run_study does this first)
    # 1. A relative folder: absolute, so a trial's own working folder finds it.
    cfg = study("seg")
    pin_segmenters(cfg, tmp_path / "out" / "cache")
    assert cfg.generator.masks.segmenter == str(seg.resolve())
    (tmp_path / "trial").mkdir()
    monkeypatch.chdir(tmp_path / "trial")
    trial = trial_config(RatioStudy(), to_dict(cfg), {"ratio": 1.0})
    assert masks_key(trial.generator.masks) == masks_key(cfg.generator.masks)
    # 2. A missing folder named like NAME/VERSION is not taken for a registered model that is not there.
    with pytest.raises(
        ConfigError,
        match=r"masks\.segmenter=seg/3: no such folder, and seg/3: not found in the registry at sqlite",
    ):
        pin_segmenters(
            load(
                RatioStudyConfig,
                None,
                ["generator.masks.method=segmenter", "generator.masks.segmenter=seg/3"],
            ),
            tmp_path / "out" / "cache",
        )
    # 3. NAME@ALIAS: pinned to its version, pulled once from the study's store into the study's cache.
    seen = fake_registry(monkeypatch, {"1": seg})
    cfg = study("nucleus-segmenter@champion")
    pin_segmenters(cfg, tmp_path / "out" / "cache")
    pinned = Path(cfg.generator.masks.segmenter)
    assert (
        pinned == tmp_path / "out" / "cache" / "segmenters" / "nucleus-segmenter-v1"
        and seen == [f"{uri}?timeout=30"]
    )
    assert bundle_identity(pinned) == bundle_identity(seg)
    assert not [p for p in pinned.parent.iterdir() if p != pinned]  # no download folder left behind


def test_syncgan_resolves_an_alias_once_for_its_masks_and_their_key(tmp_path, monkeypatch):
    from cytoray.data.source import simulated_set
    from cytoray.generators.gan import masks_to_unit
    from cytoray.generators.syncgan import SynCGAN, SynCGANConfig, masks_key
    from cytoray.masks import MasksConfig
    from cytoray.masks.nucleus_net import load_segmenter

    a, b = tiny_segmenter(tmp_path / "a", 0), tiny_segmenter(tmp_path / "b", 1)
    fake_registry(
        monkeypatch, {"1": a, "2": b, "3": b}
    )  # the alias moves to b after its first look-up
    ds = simulated_set("histology", 8, 32, 0)
    train, val = ds.subset(range(0, 8, 2)), ds.subset(range(1, 8, 2))
    cfg = SynCGANConfig(
        masks=MasksConfig(method="segmenter", segmenter="moving-seg@champion", labels="nucleus")
    )
    cgan = {s.label: s for s in SynCGAN.stages(train, val, cfg, "k", 0)}["cgan"]
    seg_a = load_segmenter(a)
    assert not np.array_equal(
        seg_a.masks(val.images), load_segmenter(b).masks(val.images)
    )  # b's masks would tell
    assert np.array_equal(cgan.train["mask"], masks_to_unit(seg_a.masks(train.images)))
    assert np.array_equal(cgan.val["mask"], masks_to_unit(seg_a.masks(val.images)))  # not b's
    assert (
        cgan.data_key
        == f"k:masks={masks_key(MasksConfig(method='segmenter', segmenter=str(a), labels='nucleus'))}"
    )  # the key of what made them


def test_cytoray_segment_without_tracking_uri_uses_the_documented_store(tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI, else sqlite:///mlflow.db, with the 30 s lock wait (as --help says)."""
    from PIL import Image

    from cytoray.cli import main
    from cytoray.data.source import simulated_set

    monkeypatch.chdir(tmp_path)
    seen = fake_registry(monkeypatch, {"7": tiny_segmenter(tmp_path / "seg", 0)})
    (tmp_path / "in").mkdir()
    Image.fromarray(simulated_set("histology", 2, 32, 7).images[0]).save(tmp_path / "in" / "a.png")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["segment", "default-store-seg/7", "in", "--out", "out"]) == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")
    assert main(["segment", "env-store-seg/7", "in", "--out", "out", "--overwrite"]) == 0
    assert seen == ["sqlite:///mlflow.db?timeout=30", f"sqlite:///{tmp_path / 'env.db'}?timeout=30"]
    assert (tmp_path / "out" / "a.png").is_file()


def test_a_segmenter_folder_under_home_is_a_folder_everywhere(tmp_path, monkeypatch):
    """`~/seg` (as a YAML config writes it: no shell to expand it) loads as the folder it names."""
    from cytoray.masks.config import MasksConfig
    from cytoray.masks.segmenter import bundle_identity, load_mask_segmenter, pinned

    monkeypatch.setenv("HOME", str(tmp_path))
    seg = tiny_segmenter(tmp_path / "seg", 0)
    cfg = MasksConfig(method="segmenter", segmenter="~/seg")
    cfg.validate()
    assert pinned(cfg) is cfg  # a folder, not a registry name to resolve
    _, ident = load_mask_segmenter("~/seg")
    assert ident == bundle_identity(seg)
