"""The augmentation-baselines study end to end (tiny): table with intervals and paired tests,
one MLflow parent with a child per cell, generators trained once per split, a re-run that
reuses every finished stage, and bad input refused before Ray starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_python

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "augmentation_baselines.py"
pytestmark = pytest.mark.usefixtures("single_ray_instance")  # see conftest.py

# The smoke settings with policies that need one generator (the vanilla GAN, two classes);
# --verbose: the workers' epoch lines reach the console, so a re-run that trains nothing shows it.
TINY = ["--smoke-test", "--verbose", "--set", "policies=[orig,gan,orig+gan]"]


def run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    # RAY_DEDUP_LOGS=0: Ray folds like lines of its workers into one "[repeated 2x ...]", which
    # would hide some of the re-run's "[cache]" lines counted below
    return run_python([str(STUDY), *args], cwd, env={"RAY_DEDUP_LOGS": "0"}, timeout=timeout)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baselines")
    r = run([*TINY, "--out", str(tmp / "out")], cwd=tmp)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return tmp, r


@pytest.mark.slow  # the study and its re-run: ~7.5 min on 2 CPUs (`make test-all`)
def test_table_cells_and_paired_tests(study):
    tmp, r = study
    out = tmp / "out"
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    assert sorted((row["split"], row["policy"]) for row in rows) == sorted(
        (k, p) for k in (0, 1) for p in ("orig", "gan", "orig+gan")
    )
    for row in rows:
        assert 0.0 <= row["balanced_accuracy"] <= 1.0 and 0 <= row["best_epoch"] < 2
    cells = res["summary"]["cells"]
    assert set(cells) == {"smallcnn|orig", "smallcnn|gan", "smallcnn|orig+gan"}
    for key, cell in cells.items():  # the cell's mean is the mean of its two splits
        vals = [row["balanced_accuracy"] for row in rows if f"smallcnn|{row['policy']}" == key]
        assert cell["mean"] == pytest.approx(sum(vals) / 2)
    assert set(res["summary"]["tests"]) == {
        "smallcnn|gan",
        "smallcnn|orig+gan",
    }  # every policy vs orig, paired
    # the two splits share their images: every interval and test is Nadeau–Bengio corrected with the
    # splits' own sizes, and the table says so
    corr = res["summary"]["correction"]
    n_test, n_train = rows[0]["n_test"], rows[0]["n_train"]
    assert corr["method"] == "nadeau_bengio" and 0 < n_test < n_train
    assert corr["test_train"] == pytest.approx(n_test / n_train)
    assert res["summary"]["tests"]["smallcnn|gan"]["test_train"] == corr["test_train"]
    md = (out / "table.md").read_text()
    assert "±" in md and "smallcnn" in md and "orig+gan" in md and "2 splits" in md
    assert "corrected for overlapping splits" in md
    assert md.strip().splitlines()[-1] in r.stdout  # the table is printed
    csv = [line.split(",") for line in (out / "table.csv").read_text().splitlines()]
    assert csv[0][:4] == ["classifier", "policy", "metric", "mean"] and "p_holm" in csv[0]
    assert sorted(r[1] for r in csv[1:]) == ["gan", "orig", "orig+gan"]  # one row per cell


@pytest.mark.slow  # the study and its re-run: ~7.5 min on 2 CPUs (`make test-all`)
def test_one_mlflow_parent_with_a_child_per_cell(study):
    from mlflow import MlflowClient

    tmp, _ = study
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("augmentation_baselines")
    runs = client.search_runs([exp.experiment_id])
    parents = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    children = [x for x in runs if "mlflow.parentRunId" in x.data.tags]
    assert len(parents) == 1 and len(children) == 6
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(
        "test_balanced_accuracy" in c.data.metrics and c.data.params["weights"] == "scratch"
        for c in children
    )
    arts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"table.md", "table.csv", "results.json"} <= arts


@pytest.mark.slow  # the study and its re-run: ~7.5 min on 2 CPUs (`make test-all`)
def test_generators_once_per_split_and_rerun_reuses_everything(study):
    tmp, first = study
    assert "epoch 1/2" in first.stdout + first.stderr  # the first run printed its training progress
    cache = tmp / "out" / "cache"
    gans = sorted(p.name.rsplit("-", 1)[0] for p in cache.iterdir() if p.name.startswith("gan-"))
    assert gans == [
        "gan-benign",
        "gan-benign",
        "gan-malignant",
        "gan-malignant",
    ]  # 2 classes × 2 splits, shared by 2 policies
    before = json.loads((tmp / "out" / "results.json").read_text())["rows"]
    r = run([*TINY, "--out", str(tmp / "out")], cwd=tmp)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert (
        r.stderr.count("[cache]") == 4 + 6 and "epoch 1/" not in r.stdout + r.stderr
    )  # no stage trained again
    assert json.loads((tmp / "out" / "results.json").read_text())["rows"] == before


@pytest.mark.parametrize(
    "sets,match",
    [
        (["policies=[orig,synth]"], r"synth.*orig.*trad"),
        (["ratio=-1"], "ratio=-1"),
        (["classifiers=[inception_v3]"], "inception_v3.*75 px"),
        (["data.n_splits=1"], "data.n_splits=1.*one run per cell"),
        (["correction=bonferroni"], "correction='bonferroni'.*nadeau_bengio"),
    ],
)
def test_bad_input_refused_before_ray_starts(tmp_path, capsys, sets, match):
    import re

    import ray

    sys.path.insert(0, str(STUDY.parent))
    try:
        import augmentation_baselines as script
    finally:
        sys.path.pop(0)
    args = [
        "--smoke-test",
        "--out",
        str(tmp_path / "out"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'm.db'}",
    ]
    assert script.main(args + [a for s in sets for a in ("--set", s)]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err, re.S), err
    assert (
        not ray.is_initialized()
        and not (tmp_path / "out").exists()
        and not (tmp_path / "m.db").exists()
    )


def test_split_too_small_for_the_ratios_is_refused(tmp_path):
    r = run(
        ["--smoke-test", "--set", "data.sim_n=4", "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 2 and "too few for split ratios" in r.stderr, r.stderr[-3000:]
    assert not (tmp_path / "out" / "cache").exists()
