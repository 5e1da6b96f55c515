"""The one experiment engine: a generator defined in this file, and nowhere else, is found by
name, trained under Ray Train on the one loop, searched by the ratio study's Tune + Optuna
driver and sampled, without touching any other file of the project."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from cytoray.bundle import load_state, read_bundle
from cytoray.errors import CytorayError
from cytoray.generators import Generator, GeneratorConfig, get_generator, load_bundle
from cytoray.training.config import RunConfig
from cytoray.training.stage import Stage, StageSpec

# ----------------------------------------------------------------------------- the toy generator


@dataclasses.dataclass
class ToyConfig(GeneratorConfig):
    name: str = "toy"
    epochs: int = 4  # enough for the colour to move
    batch_size: int = 8  # a few steps an epoch on 20 images per class
    lr: float = 0.05  # Adam step on a 3-number model


class ColourStage(Stage):
    """Learns a class's mean colour in [-1, 1]: the smallest trainer with a falling loss."""

    kind, keep = "toy_colour", "G"

    def build(self, device):
        g = nn.Module()
        g.colour = nn.Parameter(torch.zeros(3, device=device))
        return {"G": g}

    def optimizers(self, models):
        return {"G": torch.optim.Adam(models["G"].parameters(), lr=self.p["lr"])}

    def train_step(self, models, opts, batch, gen, amp):
        target = batch["image"].mean(dim=(0, 2, 3))
        loss = (models["G"].colour - target).pow(2).mean()
        opts["G"].zero_grad()
        loss.backward()
        opts["G"].step()
        return {"loss_g": loss.item()}


class Toy(Generator):
    name, Config = "toy", ToyConfig

    def __init__(self, colours: dict[str, torch.Tensor], size: int) -> None:
        self.colours, self.size, self.classes = colours, size, list(colours)

    @classmethod
    def stages(cls, train, val, cfg, data_key, seed):
        p = dataclasses.asdict(cfg)
        return [
            StageSpec(
                f"toy/{c}",
                ColourStage(p),
                {"image": train.images[train.labels == i].transpose(0, 3, 1, 2) / 127.5 - 1},
                None,
                {},
                f"{data_key}:{c}",
                seed,
            )
            for i, c in enumerate(train.class_names)
        ]

    @classmethod
    def assemble(cls, train, cfg, results, data_key):
        meta = {"classes": list(train.class_names), "size": int(train.images.shape[1])}
        return (
            meta,
            {f"colour_{c}": results[f"toy/{c}"].best_state() for c in train.class_names},
            {},
        )

    @classmethod
    def load(cls, path):
        meta, path = read_bundle(path)
        return cls(
            {c: load_state(path, f"colour_{c}")["colour"] for c in meta["classes"]}, meta["size"]
        )

    def sample(self, n, cls, seed=0):
        self.check_class(cls)
        rng = np.random.default_rng(seed)
        base = (self.colours[cls].numpy() + 1) * 127.5
        noise = rng.normal(0, 8, (n, self.size, self.size, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8), None


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
