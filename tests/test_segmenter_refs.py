"""What `masks.segmenter` and `cytoray segment` name: a folder or a registered NAME@ALIAS /
NAME/VERSION, settled once (a study's driver pins it before any trial; SynCGAN resolves an alias
once for its masks and their key), from the store the command line documents."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from test_refined_sim import tiny_segmenter


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


def test_syncgan_resolves_an_alias_once_for_its_masks_and_their_key(tmp_path, monkeypatch):
    from cytoray.data.source import simulated_set
    from cytoray.generators.gan import masks_to_unit
    from cytoray.generators.refined_sim import load_segmenter
    from cytoray.generators.syncgan import SynCGAN, SynCGANConfig, masks_key
    from cytoray.masks import MasksConfig

    a, b = tiny_segmenter(tmp_path / "a", 0), tiny_segmenter(tmp_path / "b", 1)
    fake_registry(monkeypatch, {"1": a, "2": b, "3": b})  # the alias moves to b after its first look-up
    ds = simulated_set("histology", 8, 32, 0)
    train, val = ds.subset(range(0, 8, 2)), ds.subset(range(1, 8, 2))
    cfg = SynCGANConfig(masks=MasksConfig(method="segmenter", segmenter="moving-seg@champion"))
    cgan = {s.label: s for s in SynCGAN.stages(train, val, cfg, "k", 0)}["cgan"]
    seg_a = load_segmenter(a)
    assert not np.array_equal(seg_a.masks(val.images), load_segmenter(b).masks(val.images))  # b's masks would tell
    assert np.array_equal(cgan.train["mask"], masks_to_unit(seg_a.masks(train.images)))
    assert np.array_equal(cgan.val["mask"], masks_to_unit(seg_a.masks(val.images)))  # not b's
    assert cgan.data_key == f"k:masks={masks_key(MasksConfig(method='segmenter', segmenter=str(a)))}"  # the key of what made them


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
    assert main(["segment", "env-store-seg/7", "in", "--out", "out"]) == 0
    assert seen == ["sqlite:///mlflow.db?timeout=30", f"sqlite:///{tmp_path / 'env.db'}?timeout=30"]
    assert (tmp_path / "out" / "a.png").is_file()
