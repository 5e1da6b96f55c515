"""Small MLflow stores shaped exactly as the studies write them, in about a second each.

The runs go through the real writers (`find_or_create_parent`, `MlflowStudyCallback` driven with
Tune-like trial objects, `set_parent_summary`, `result_child`) and the studies' own `describe`, so
run names, tags and metric keys are the ones a study produces; only the numbers are chosen here
(and stated, so the tests can check the report prints them).
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np

from cytoray.tracking.run_info import with_run_info

CLASSES = ("benign", "malignant")
FID_ALL = "fid_val_inception/all"


def _store(db: Path, experiment: str):
    """(client, uri, experiment id) with the experiment created the way a study creates it."""
    from mlflow import MlflowClient

    from cytoray.tracking.mlflow_utils import setup

    uri = setup(experiment, f"sqlite:///{db}")
    client = MlflowClient(tracking_uri=uri)
    return client, uri, client.get_experiment_by_name(experiment).experiment_id


def _parent(client, exp_id: str, name: str, out: Path, params: dict) -> str:
    from cytoray.config import flatten
    from cytoray.tracking.study_logger import find_or_create_parent

    parent = find_or_create_parent(client, exp_id, name, str(out), resume=False)
    for k, v in flatten(params).items():
        client.log_param(parent, k, str(v)[:500])
    return parent


def _trial(tid: str, config: dict, last: dict | None = None):
    return types.SimpleNamespace(
        trial_id=tid, config=config, last_result=last or {}, status="TERMINATED"
    )


# ----------------------------------------------------------------------------- ratio study

# (trial id, ratio, lam, per-epoch val balanced accuracy, validation FID, outcome)
RATIO_TRIALS = [
    ("t0001", 1.0, 10.0, [0.55, 0.70, 0.85], 150.0, "finished"),
    ("t0002", 2.0, 50.0, [0.50, 0.60, 0.65], 120.0, "finished"),
    ("t0003", 4.0, 100.0, [0.50, 0.52], 180.0, "stopped"),  # ASHA after its 2nd epoch
    ("t0004", 0.5, 25.0, [0.50, 0.55, 0.60], 200.0, "finished"),
]
BEST_TEST = {"accuracy": 0.8125, "balanced_accuracy": 0.8, "f1_macro": 0.79, "roc_auc": 0.88}


def ratio_store(tmp: Path, experiment: str = "syncgan_ratio") -> tuple[str, str]:
    """A finished ratio study: 4 trials (one stopped by ASHA), figures and generator history per trial."""
    from cytoray.config import to_dict
    from cytoray.experiments.ratio import RatioStudy, RatioStudyConfig
    from cytoray.report.grids import write_real_vs_synthetic
    from cytoray.tracking.study_logger import KIND_TAG, MlflowStudyCallback, set_parent_summary

    db = tmp / "mlflow.db"
    client, uri, exp_id = _store(db, experiment)
    cfg = RatioStudyConfig(name=experiment)
    study = RatioStudy()
    study.check(cfg)
    parent = _parent(client, exp_id, experiment, tmp / "study", to_dict(cfg))
    cb = MlflowStudyCallback(uri, exp_id, parent, study.describe)
    rng = np.random.default_rng(0)
    for tid, ratio, lam, curve, fid, outcome in RATIO_TRIALS:
        trial = _trial(tid, {"ratio": ratio, "generator": {"cgan": {"lam": lam}}})
        figs = tmp / "figures" / tid
        real = {c: rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8) for c in CLASSES}
        synth = {
            c: (rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), rng.random((8, 32, 32)) > 0.5)
            for c in CLASSES
        }
        write_real_vs_synthetic(figs, real, synth, f"syncgan, trial {tid}")
        hist = {
            f"mask_gan/{c}": [
                {"epoch": e, "loss_g": 1.0 - 0.1 * e, "loss_d": 0.7} for e in range(3)
            ]
            for c in CLASSES
        }
        hist["cgan"] = [
            {"epoch": e, "loss_g": 2.0 - 0.2 * e, "loss_l1": 0.5 - 0.05 * e} for e in range(3)
        ]
        (figs / "generator_history.json").write_text(json.dumps(hist))
        extra = with_run_info(
            {FID_ALL: fid, "figures": str(figs)},
            tags={"generator": "syncgan", "policy": "orig+syncgan"},
        )
        for e, bacc in enumerate(curve):
            res = {
                "val_balanced_accuracy": bacc,
                "val_accuracy": bacc,
                "train_loss": 1.0 / (e + 1),
                "val_loss": 1.2 / (e + 1),
                "epoch": e,
                "training_iteration": e + 1,
                **extra,
            }
            cb.on_trial_result(e + 1, [trial], trial, res)
            trial.last_result = res
        if outcome == "finished":
            res = with_run_info(
                {
                    "val_balanced_accuracy": max(curve),
                    "final": 1,
                    "trial_seconds": 30.0,
                    "generator_cached": 0,
                    "training_iteration": len(curve) + 1,
                    **extra,
                },
                params={"weights": "scratch"},
            )
            cb.on_trial_result(len(curve) + 1, [trial], trial, res)
            trial.last_result = res
        cb.on_trial_complete(0, [trial], trial)
    client.set_tag(parent, "cytoray.best_trial", "t0001")
    for k, v in BEST_TEST.items():
        client.log_metric(parent, f"best_test_{k}", v)
    client.log_metric(parent, "study_seconds", 125.0)
    set_parent_summary(
        client,
        parent,
        {KIND_TAG: "ratio", **study.tags},
        f"**{experiment}**: 4 trials (test store)",
    )
    client.set_terminated(parent, "FINISHED")
    return uri, parent


# ----------------------------------------------------------------------------- baselines study

# test balanced accuracy per (policy, split): orig lowest, syncgan best on every split
BASELINE_SCORES = {
    "orig": [0.60, 0.65, 0.62],
    "trad": [0.66, 0.70, 0.64],
    "syncgan": [0.75, 0.80, 0.78],
}
BASELINE_FID = [140.0, 150.0, 160.0]  # syncgan's FID on each split's test images


def baselines_store(tmp: Path, experiment: str = "augmentation_baselines") -> tuple[str, str]:
    from cytoray.config import to_dict
    from cytoray.experiments.baselines import BaselinesConfig, BaselinesStudy
    from cytoray.report.grids import write_real_vs_synthetic
    from cytoray.tracking.study_logger import KIND_TAG, MlflowStudyCallback, set_parent_summary

    client, uri, exp_id = _store(tmp / "mlflow.db", experiment)
    cfg = BaselinesConfig(name=experiment, policies=list(BASELINE_SCORES), classifiers=["smallcnn"])
    cfg.data.n_splits = 3
    parent = _parent(client, exp_id, experiment, tmp / "study", to_dict(cfg))
    cb = MlflowStudyCallback(uri, exp_id, parent, BaselinesStudy().describe)
    for pol, scores in BASELINE_SCORES.items():
        for k, s in enumerate(scores):
            cell = {"split": k, "classifier": "smallcnn", "policy": pol, "repeat": 0}
            trial = _trial(f"{pol}-{k}", {"cell": cell})
            res = {
                "test_balanced_accuracy": s,
                "test_accuracy": s,
                "n_test": 30,
                "n_train": 90,
                "final": 1,
                "training_iteration": 1,
            }
            if pol == "syncgan":
                res.update(
                    {
                        "fid_test_inception/all": BASELINE_FID[k],
                        "fid_test_inception/benign": BASELINE_FID[k] + 5,
                        "fid_test_inception/malignant": BASELINE_FID[k] - 5,
                        "kid_test_inception_mean/all": 0.05,
                        "fid_test_inception_floor/all": 60.0,
                        "fid_test_inception_n_fake/all": 60.0,
                    }
                )
            cb.on_trial_result(1, [trial], trial, res)
            trial.last_result = res
            cb.on_trial_complete(1, [trial], trial)
    rng = np.random.default_rng(1)
    figs = tmp / "figures" / "syncgan"
    real = {c: rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8) for c in CLASSES}
    write_real_vs_synthetic(
        figs, real, {c: (x[::-1], None) for c, x in real.items()}, "syncgan (split 0)"
    )
    for png in sorted(figs.glob("*.png")):
        client.log_artifact(parent, str(png), "figures/syncgan")
    set_parent_summary(client, parent, {KIND_TAG: "baselines"}, "baselines (test store)")
    client.set_terminated(parent, "FINISHED")
    return uri, parent


# ----------------------------------------------------------------------------- histology -> cytology

HISTO_FID = {
    "histology": {"benign": 300.0, "malignant": 280.0, "all": 290.0},
    "cyclegan": {"benign": 150.0, "malignant": 140.0, "all": 145.0},
    "nst": {"benign": 200.0, "malignant": 210.0, "all": 205.0},
}


def histo_store(tmp: Path, experiment: str = "cytoray-histo-to-cyto") -> tuple[str, str]:
    from cytoray.config import to_dict
    from cytoray.experiments.histo_to_cyto import HistoToCytoConfig
    from cytoray.io import save_png
    from cytoray.tracking.study_logger import KIND_TAG, result_child, set_parent_summary

    client, uri, exp_id = _store(tmp / "mlflow.db", experiment)
    parent = _parent(
        client, exp_id, experiment, tmp / "study", to_dict(HistoToCytoConfig(name=experiment))
    )
    for row, by in HISTO_FID.items():
        for c, v in by.items():
            client.log_metric(parent, f"{row}/fid_test_inception/{c}", v)
            client.log_metric(parent, f"{row}/kid_test_inception_mean/{c}", v / 1000)
            client.log_metric(parent, f"{row}/kid_test_inception_std/{c}", 0.01)
            client.log_metric(parent, f"{row}/fid_test_inception_n_real/{c}", 8.0)
        client.log_metric(parent, f"{row}/fid_test_inception_floor/all", 90.0)
        label = {
            "histology": "real histology",
            "cyclegan": "CycleGAN G(histology)",
            "nst": "NST [inception]",
        }[row]
        rid = result_child(
            client, exp_id, parent, f"row:{row}", f"result: {label}", {"variant": row}
        )
        client.set_terminated(rid, "FINISHED")
    rng = np.random.default_rng(2)
    for c in CLASSES:
        save_png(tmp / "grids" / f"{c}.png", rng.integers(0, 255, (96, 256, 3), dtype=np.uint8))
        client.log_artifact(parent, str(tmp / "grids" / f"{c}.png"), "results")
    set_parent_summary(client, parent, {KIND_TAG: "histo_to_cyto"}, "histo (test store)")
    client.set_terminated(parent, "FINISHED")
    return uri, parent


# ----------------------------------------------------------------------------- refined segmentation

# pooled test Dice per comparison row and split (refined + hard best on every split)
SEG_SCORES = {
    "otsu": [0.40, 0.45, 0.42],
    "syncgan_masks": [0.30, 0.34, 0.31],
    "raw": [0.44, 0.46, 0.45],
    "refined": [0.47, 0.49, 0.46],
    "refined_hard": [0.52, 0.55, 0.53],
}
SEG_TRIALS = [
    ("s0001", 1e-3, 0.50),
    ("s0002", 1e-2, 0.55),
]  # (trial id, refiner.l1_weight, val_dice)


def segmentation_store(tmp: Path, experiment: str = "refined_segmentation") -> tuple[str, str]:
    """A finished refined-segmentation study on the embedded simulator: two trials and its comparison
    (comparison.json on the parent, the table in its description), as `finish` logs them."""
    from cytoray.config import to_dict
    from cytoray.experiments.segmentation import (
        PROPOSED,
        ROWS,
        SegmentationStudy,
        SegmentationStudyConfig,
        write_comparison,
    )
    from cytoray.metrics.classification import holm, mean_ci, paired_test
    from cytoray.tracking.study_logger import KIND_TAG, MlflowStudyCallback, set_parent_summary

    client, uri, exp_id = _store(tmp / "mlflow.db", experiment)
    cfg = SegmentationStudyConfig(name=experiment)
    parent = _parent(client, exp_id, experiment, tmp / "study", to_dict(cfg))
    cb = MlflowStudyCallback(uri, exp_id, parent, SegmentationStudy().describe)
    for tid, l1, dice in SEG_TRIALS:
        trial = _trial(tid, {"generator": {"refiner": {"l1_weight": l1}}})
        res = with_run_info(
            {"val_dice": dice, "final": 1, "trial_seconds": 20.0, "training_iteration": 1},
            tags={"generator": "refined-sim"},
        )
        cb.on_trial_result(1, [trial], trial, res)
        trial.last_result = res
        cb.on_trial_complete(1, [trial], trial)
    tests = {r: paired_test(SEG_SCORES[PROPOSED], SEG_SCORES[r]) for r in ROWS if r != PROPOSED}
    for r, p in holm({r: t["p_value"] for r, t in tests.items()}).items():
        tests[r]["p_holm"] = p
    c = {
        "scores": SEG_SCORES,
        "cells": {r: mean_ci(v) for r, v in SEG_SCORES.items()},
        "tests": tests,
        "n_splits": 3,
        "n_test": [8, 8, 8],
        "probe": {"initial": [0.9], "refined": [0.7]},
        "syncgan_method": "syncgan",
    }
    table = write_comparison(tmp / "study", c, "embedded simulator", cfg)
    client.log_artifact(parent, str(tmp / "study" / "comparison.json"))
    client.set_tag(parent, "cytoray.best_trial", "s0002")
    client.log_metric(parent, "best_test_dice", 0.53)
    set_parent_summary(
        client, parent, {KIND_TAG: "segmentation"}, f"**{experiment}** (test store)\n\n{table}"
    )
    client.set_terminated(parent, "FINISHED")
    return uri, parent
