"""The one experiment engine: the template generator (cytoray/generators/_template.py, a module
the registry does not import, so Toy exists only once this file imports it) is found by name,
trained under Ray Train on the one loop, searched by the ratio study's Tune + Optuna driver and
sampled, without touching any other file of the project."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cytoray.errors import CytorayError
from cytoray.generators import get_generator, load_bundle
from cytoray.generators._template import Toy, ToyConfig
from cytoray.training.config import RunConfig

# ----------------------------------------------------------------------------- the tests


def test_found_by_name_with_no_list_to_edit():
    assert get_generator("toy") is Toy
    with pytest.raises(CytorayError, match=r"unknown generator 'toyy' \(valid: .*toy"):
        get_generator("toyy")


def test_trained_under_ray_train_and_sampled(tmp_path):
    from cytoray.data.source import simulated_set

    ds = simulated_set("cytology", 40, 16, 0)
    out, res = Toy.train(
        ds,
        ds,
        ToyConfig(),
        tmp_path / "bundle",
        tmp_path / "cache",
        "k",
        RunConfig(storage_path=str(tmp_path / "ray")),
    )
    assert set(res) == {"toy/benign", "toy/malignant"}
    for r in res.values():
        assert r.history[-1]["loss_g"] < 0.5 * r.history[0]["loss_g"]  # the colour was learned
    imgs, masks = load_bundle(out).sample(5, "benign", seed=1)
    assert imgs.shape == (5, 16, 16, 3) and imgs.dtype == np.uint8 and masks is None
    real = ds.images[ds.labels == 0].reshape(-1, 3).mean(0)
    assert np.abs(imgs.reshape(-1, 3).mean(0) - real).max() < 40  # samples carry the class's colour


def test_a_placement_group_whose_creator_died_is_freed_before_the_next_job():
    """A Train controller killed with its trial (ASHA's stop) can leave its workers' placement group
    reserved for the rest of the study: the reaper each job runs first frees it, and leaves the
    driver's own groups (Tune's trial groups) alone."""
    import time

    import ray
    from ray.util.placement_group import (
        placement_group,
        placement_group_table,
        remove_placement_group,
    )

    from cytoray.training.runner import init_ray, reap_orphaned_placement_groups

    init_ray()

    @ray.remote(num_cpus=0)
    class Creator:  # stands in for a Train controller
        def reserve(self) -> str:
            pg = placement_group([{"CPU": 1}])
            ray.get(pg.ready())
            return pg.id.hex()

    creator = Creator.remote()
    orphan = ray.get(creator.reserve.remote())
    ray.kill(creator)
    mine = placement_group([{"CPU": 1}])
    ray.get(mine.ready())
    try:
        assert placement_group_table()[orphan]["state"] == "CREATED"  # Ray itself keeps it
        deadline, reaped = time.monotonic() + 30, 0
        while not reaped and time.monotonic() < deadline:  # the creator's death arrives async
            reaped = reap_orphaned_placement_groups()
            time.sleep(0.2)
        assert reaped == 1
        assert placement_group_table()[orphan]["state"] == "REMOVED"
        assert placement_group_table(mine)["state"] == "CREATED"
        assert reap_orphaned_placement_groups() == 0
    finally:
        remove_placement_group(mine)


def test_several_trainings_share_one_ray_train_job_and_the_bundle_cache(tmp_path, capsys):
    """`train_generators` (the segmentation study's comparison rows): two settings train in ONE
    Ray Train job; each bundle is the one `train_generator` finds for its settings afterwards."""
    import dataclasses

    from cytoray.bundle import read_bundle
    from cytoray.data.source import simulated_set
    from cytoray.experiments.common import train_generator, train_generators

    ds = simulated_set("cytology", 40, 16, 0)
    run, cache = RunConfig(storage_path=str(tmp_path / "ray")), tmp_path / "cache"
    cfgs = {"slow": ToyConfig(lr=0.01), "fast": ToyConfig(lr=0.05)}
    jobs = {k: (c, ds, ds, "k") for k, c in cfgs.items()}
    bundles = train_generators(Toy, jobs, cache, run)
    assert len(set(bundles.values())) == 2
    jobs_run = [p.name for p in (tmp_path / "ray").iterdir() if p.is_dir()]
    assert len(jobs_run) == 1 and jobs_run[0].startswith("toy-2-"), jobs_run  # one job, four stages
    for k, c in cfgs.items():
        meta, _ = read_bundle(bundles[k])
        assert meta["config"]["lr"] == c.lr and meta["stages"] == ["toy/benign", "toy/malignant"]
        gen, path, cached = train_generator(Toy, c, ds, ds, "k", cache, run)
        assert path == bundles[k] and cached
    assert train_generators(Toy, jobs, cache, run) == bundles  # the cache answers: no second job
    assert len(list((tmp_path / "ray").iterdir())) == 1
    assert "reusing bundle" in capsys.readouterr().err
    # Two keys naming one setting share one bundle, trained once (a job of one setting's stages).
    run2 = RunConfig(storage_path=str(tmp_path / "ray2"))
    same = {"a": jobs["slow"], "b": (dataclasses.replace(cfgs["slow"]), ds, ds, "k")}
    twice = train_generators(Toy, same, tmp_path / "cache2", run2)
    assert twice["a"] == twice["b"] and (twice["a"] / "generator.json").is_file()
    assert [p.name.startswith("toy-2-") for p in (tmp_path / "ray2").iterdir()] == [False]


@pytest.mark.usefixtures("single_ray_instance")
def test_searched_by_the_ratio_study(tmp_path):
    from mlflow import MlflowClient

    from cytoray.config import load
    from cytoray.experiments.driver import run_study
    from cytoray.experiments.ratio import RatioStudy, RatioStudyConfig

    space = tmp_path / "space.yaml"
    space.write_text(
        "space:\n  generator.lr: {dist: loguniform, low: 0.01, high: 0.1}\n  ratio: {dist: choice, values: [0.5, 1.0]}\n"
    )
    sets = [
        "generator.name=toy",
        f"tune.search_space={space}",
        "tune.num_samples=2",
        "tune.asha=false",
        "register=false",
        "data.sim_n=40",
        "data.size=16",
        "classifier.epochs=2",
        "fid_per_class=4",
    ]
    cfg = load(RatioStudyConfig, None, sets)
    assert cfg.generator == ToyConfig()  # the study config names the plugin's own typed section
    res = run_study(
        RatioStudy(), cfg, tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"
    )
    assert res["n_trials"] == 2 and set(res["test"]) == {
        "accuracy",
        "balanced_accuracy",
        "f1_macro",
        "roc_auc",
    }
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert (
        best["config"]["generator"]["name"] == "toy"
        and 0.01 <= best["config"]["generator"]["lr"] <= 0.1
    )
    imgs, _ = load_bundle(best["bundle"]).sample(3, "malignant")
    assert imgs.shape == (3, 16, 16, 3)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("toy_ratio").experiment_id]
    )  # the generator's own experiment
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(
        c.data.tags["generator"] == "toy" and "generator.lr" in c.data.params for c in children
    )
    assert (
        Path(best["bundle"]).parent.name == "bundles"
    )  # trained once per setting, in the study's bundle cache
