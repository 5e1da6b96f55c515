"""Objectives averaged over splits (`tune.splits: K`, experiments/split_average.py): the running
mean, its spread and every split's value; a trial cut short (killed, or stopped) is never counted
as whole; a restarted trial keeps the splits it scored and scores only the rest, each once."""

from __future__ import annotations

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
from conftest import run_python as run

from cytoray.config import load
from cytoray.errors import ConfigError
from cytoray.experiments.split_average import combine, score_splits
from cytoray.experiments.tune_state import SplitResults

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "syncgan_ratio.py"
VALUES = [0.70, 0.55, 0.80]  # a configuration's validation balanced accuracy on splits 0, 1, 2


def splits(k: int = 3) -> list[SimpleNamespace]:
    return [SimpleNamespace(key=f"manifest{j}") for j in range(k)]


def scorer(log: list[int], fail_at: int | None = None):
    def score(j: int, sp: SimpleNamespace) -> dict:
        if j == fail_at:
            raise RuntimeError(f"killed while scoring split {j}")
        log.append(j)
        return {
            "val_balanced_accuracy": VALUES[j],
            "fid_val_inception/all": 100.0 + j,
            "bundle": f"b{j}",
            "epoch": 3,
        }

    return score


def test_combine_reports_mean_spread_and_each_split():
    out = combine(
        [
            {"val_f1": 0.5, "fid_val_inception/all": 90.0, "bundle": "b0", "generator_cached": 0},
            {"val_f1": 0.7, "fid_val_inception/all": 110.0, "bundle": "b1", "generator_cached": 1},
        ]
    )
    assert out["val_f1"] == pytest.approx(0.6) and out["val_f1_sd"] == pytest.approx(
        np.std([0.5, 0.7], ddof=1)
    )
    assert out["val_f1/split0"] == 0.5 and out["val_f1/split1"] == 0.7
    assert (
        out["fid_val_inception/all"] == pytest.approx(100.0) and "fid_val_inception/all_sd" in out
    )
    assert (
        out["bundle"] == "b0"
        and out["generator_cached"] == 0.5
        and "generator_cached_sd" not in out
    )
    assert out["splits_scored"] == 2


def test_a_trial_killed_part_way_resumes_without_counting_a_split_twice(tmp_path):
    path = tmp_path / "trial_splits" / "t1.json"
    reports, scored = [], []
    with pytest.raises(RuntimeError):  # the trial dies on split 2 (a SIGKILL, a node lost)
        score_splits(splits(), scorer(scored, fail_at=2), SplitResults(path, "cfg"), reports.append)
    assert scored == [0, 1] and [r["final"] for r in reports] == [0, 0]  # half-scored: never whole
    assert (
        reports[-1]["val_balanced_accuracy"] == pytest.approx(np.mean(VALUES[:2]))
        and reports[-1]["splits_scored"] == 2
    )
    # Tune restarts the trial from scratch; the store gives back splits 0 and 1, only split 2 is scored.
    reports2, scored2 = [], []
    last = score_splits(splits(), scorer(scored2), SplitResults(path, "cfg"), reports2.append)
    assert scored2 == [2]
    assert [r["final"] for r in reports2] == [0, 0, 1] and [
        r["splits_scored"] for r in reports2
    ] == [1, 2, 3]
    assert last["val_balanced_accuracy"] == pytest.approx(np.mean(VALUES))  # each split once
    assert last["val_balanced_accuracy_sd"] == pytest.approx(np.std(VALUES, ddof=1))
    assert [last[f"val_balanced_accuracy/split{j}"] for j in range(3)] == VALUES
    # Once whole, a further restart scores nothing and reports the same result.
    scored3 = []
    again = score_splits(splits(), scorer(scored3), SplitResults(path, "cfg"), lambda r: None)
    assert scored3 == [] and again == last


def test_stored_splits_are_reused_only_for_the_same_config_and_manifest(tmp_path):
    path = tmp_path / "t.json"
    score_splits(splits(2), scorer([]), SplitResults(path, "cfg"), lambda r: None)
    other_cfg = []
    score_splits(splits(2), scorer(other_cfg), SplitResults(path, "other config"), lambda r: None)
    assert other_cfg == [0, 1]
    moved = []  # split 1's manifest changed (new data): it is scored again, split 0 kept
    score_splits(
        [SimpleNamespace(key="manifest0"), SimpleNamespace(key="new")],
        scorer(moved),
        SplitResults(path, "other config"),
        lambda r: None,
    )
    assert moved == [1]
    path.write_text("{not json")  # an unreadable store: scored afresh, never a crash
    fresh = []
    score_splits(splits(2), scorer(fresh), SplitResults(path, "cfg"), lambda r: None)
    assert fresh == [0, 1] and json.loads(path.read_text())["config"] == "cfg"


def test_k_seeded_splits_are_distinct_and_split_0_is_the_one_split_study(tmp_path):
    from cytoray.experiments.ratio import RatioStudyConfig, load_study_data

    small = ["data.sim_n=30", "data.size=32"]
    one = load_study_data(load(RatioStudyConfig, None, small), tmp_path / "one")
    three = load_study_data(
        load(RatioStudyConfig, None, [*small, "tune.splits=3"]), tmp_path / "three"
    )
    keys = [sp.key for sp in three.splits]
    assert len(set(keys)) == 3 and keys[0] == one.key == three.key and len(one.splits) == 1
    assert sorted(Path(p).name for p in three.manifests) == [
        "split.json",
        "split_1.json",
        "split_2.json",
    ]


def test_asha_counts_splits_and_other_studies_refuse_k(tmp_path):
    from cytoray.experiments.baselines import BaselinesConfig, BaselinesStudy
    from cytoray.experiments.driver import run_study
    from cytoray.experiments.ratio import RatioStudy, RatioStudyConfig

    cfg = load(RatioStudyConfig, None, ["tune.splits=3"])
    assert RatioStudy().asha_metric(cfg) == (
        "val_balanced_accuracy",
        "max",
        3,
        2,
    )  # one report per split, a rung before the last
    assert RatioStudy().asha_metric(load(RatioStudyConfig, None, [])) == (
        "val_balanced_accuracy",
        "max",
        11,
    )  # epochs, as before
    with pytest.raises(ConfigError, match="tune.splits"):
        load(RatioStudyConfig, None, ["tune.splits=0"])
    with pytest.raises(ConfigError, match="does not average its trials over splits"):
        run_study(BaselinesStudy(), load(BaselinesConfig, None, ["tune.splits=2"]), tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.slow  # ~4 min on 2 CPUs: a two-split study, killed after its first split, resumed
@pytest.mark.usefixtures("single_ray_instance")
def test_study_with_two_splits_resumes_after_sigkill_without_double_counting(tmp_path):
    out = tmp_path / "study"
    args = [
        str(STUDY),
        "--smoke-test",
        "--out",
        str(out),
        "--set",
        "tune.num_samples=1",
        "--set",
        "tune.splits=2",
        "--set",
        "filter.method=centroid",
        "--set",
        "filter.keep=0.5",
        "--set",
        "register=false",
    ]
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store, deadline = out / "trial_splits", time.time() + 600
    before: dict = {}
    while (
        time.time() < deadline and not before
    ):  # wait for the first split's result, then kill everything
        time.sleep(1)
        for p in store.glob("*.json"):
            before = json.loads(p.read_text())["splits"]
        assert proc.poll() is None or before, "the study ended before its first split was stored"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(before) == ["0"], before
    r = run([*args, "--resume"], cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    (trial,) = list(store.glob("*.json"))
    after = json.loads(trial.read_text())["splits"]
    assert (
        after["0"] == before["0"]
    )  # split 0 kept as scored before the kill (its timings, its classifier), not rescored
    rows = [
        json.loads(line)
        for p in (out / "tune").rglob("result.json")
        for line in p.read_text().splitlines()
    ]
    final = [x for x in rows if x.get("final") == 1]
    assert len(final) == 1 and final[0]["splits_scored"] == 2
    vals = [after[j]["result"]["val_balanced_accuracy"] for j in ("0", "1")]
    assert final[0]["val_balanced_accuracy"] == pytest.approx(np.mean(vals))
    assert [final[0][f"val_balanced_accuracy/split{j}"] for j in (0, 1)] == pytest.approx(vals)
    assert (
        0 < final[0]["filter_rejected_share"] <= 0.5 + 1e-9
    )  # keep 0.5: about half the drawn images rejected
    best = json.loads((out / "best.json").read_text())
    assert {
        "balanced_accuracy",
        "balanced_accuracy_sd",
        "balanced_accuracy/split0",
        "balanced_accuracy/split1",
    } <= set(best["test"])
    assert any(p.name.startswith("filter_") for p in (out / "figures").rglob("*.png"))
