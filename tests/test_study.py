"""The search study end to end: MLflow parent + one child per trial, registry pull in a fresh
process, resume after SIGKILL, and a real two-node Ray cluster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_python as run

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("single_ray_instance")  # see conftest.py
STUDY = ROOT / "studies" / "syncgan_ratio.py"
TINY = ["--set", "tune.num_samples=3", "--set", "tune.grace_period=1"]
FID_ALL = "fid_val_inception/all"


def mlflow_runs(db: Path, experiment: str = "syncgan_ratio"):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory):
    """One smoke study (3 trials, multi-objective: validation FID and balanced accuracy), killed with
    SIGKILL once a trial has finished and resumed to the end: the resume test reads what the kill
    left, the other tests the finished study (one study instead of two: ~5 min of `make test`).
    The cluster test runs the default objective."""
    tmp = tmp_path_factory.mktemp("study")
    out = tmp / "study"
    args = [
        str(STUDY),
        "--smoke-test",
        "--out",
        str(out),
        *TINY,
        "--set",
        "tune.multi_objective=true",
    ]
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=tmp,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    exp = out / "tune" / "syncgan_ratio"
    deadline = time.time() + 600
    done_before: set[str] = set()
    while time.time() < deadline:  # wait for one finished trial in Tune's saved state
        time.sleep(2)
        done_before = {
            p.parent.name
            for p in exp.glob("trial_fn_*/result.json")
            if '"final": 1' in p.read_text()
        }
        if done_before:
            break
        assert proc.poll() is None, "study ended before it could be killed"
    time.sleep(3)  # let the experiment state (saved every 2 s) include it
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    proc.wait()
    assert done_before, "no trial finished before the deadline"
    _, parents, children = mlflow_runs(tmp / "mlflow.db")
    killed = {
        "done": done_before,
        "parents": [p.info.run_id for p in parents],
        "children": {c.data.tags["cytoray.trial_id"]: c.info.run_id for c in children},
    }
    r = run([*args, "--resume"], cwd=tmp)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return tmp, r, killed


def test_study_writes_parent_and_one_child_per_trial(smoke_study):
    tmp, r, _ = smoke_study
    client, parents, children = mlflow_runs(tmp / "mlflow.db")
    assert len(parents) == 1 and len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert len({c.data.tags["cytoray.trial_id"] for c in children}) == 3
    p = parents[0].data
    assert "best_test_balanced_accuracy" in p.metrics and p.params["tune.num_samples"] == "3"
    finished = [c for c in children if FID_ALL in c.data.metrics]
    assert finished and all(
        "val_balanced_accuracy" in c.data.metrics and "ratio" in c.data.params for c in finished
    )
    best = json.loads((tmp / "study" / "best.json").read_text())
    assert set(best["test"]) == {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc"}
    assert (
        "Best configuration, test split (scored once)" in r.stdout
        and "mlflow ui --backend-store-uri" in r.stdout
    )


def test_multi_objective_search_is_told_both_objectives(smoke_study):
    import pickle

    tmp, _, _ = smoke_study
    exp = tmp / "study" / "tune" / "syncgan_ratio"
    reports = [
        json.loads(line)
        for p in exp.glob("trial_fn_*/result.json")
        for line in p.read_text().splitlines()
    ]
    assert len(reports) > 3 and all(
        FID_ALL in r and "val_balanced_accuracy" in r for r in reports
    )  # every epoch:
    # ASHA may stop a trial after any epoch, and its last report is what Optuna is told.
    state = pickle.loads(max(exp.glob("searcher-state-*.pkl")).read_bytes())
    assert state["_metric"] == [FID_ALL, "val_balanced_accuracy"] and state["_mode"] == [
        "min",
        "max",
    ]
    trials = state["_ot_study"].get_trials()
    assert len(trials) == 3 and all(
        t.state.name == "COMPLETE" and len(t.values) == 2 for t in trials
    )


def test_pull_and_classify_from_registry_in_a_fresh_process(smoke_study):
    tmp, study, _ = smoke_study
    # A smoke run is registered but never takes the champion alias (selection is on validation, budgets count).
    assert "registered syncgan v1 (not champion: a --smoke-test run)" in study.stdout
    r = run(
        ["-m", "cytoray.cli", "pull", "syncgan@champion", "--n", "1", "--out", str(tmp / "none")],
        cwd=tmp,
    )
    assert r.returncode == 2 and not (tmp / "none").exists()
    r = run(
        [
            "-m",
            "cytoray.cli",
            "pull",
            "syncgan/1",
            "--n",
            "4",
            "--cls",
            "malignant",
            "--out",
            str(tmp / "pulled"),
        ],
        cwd=tmp,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp / "pulled" / "malignant").glob("*.png"))) == 4
    assert len(list((tmp / "pulled" / "malignant" / "masks").glob("*.png"))) == 4
    r = run(
        ["-m", "cytoray.cli", "classify", "syncgan-classifier/1", str(tmp / "pulled"), "--json"],
        cwd=tmp,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout)
    assert len(rows) == 4 and all(row["prediction"] in ("benign", "malignant") for row in rows)
    r = run(
        ["-m", "cytoray.cli", "pull", "nosuch@champion", "--n", "1", "--out", str(tmp / "x")],
        cwd=tmp,
    )
    assert r.returncode == 2 and "not found in the registry" in r.stderr


def test_resume_after_sigkill_loses_nothing(smoke_study):
    tmp, r, killed = smoke_study
    assert len(killed["parents"]) == 1
    assert "resuming" in r.stderr
    _, parents2, children2 = mlflow_runs(tmp / "mlflow.db")
    assert [p.info.run_id for p in parents2] == killed["parents"]  # parent reused
    ids = [c.data.tags["cytoray.trial_id"] for c in children2]
    assert len(ids) == len(set(ids)) == 3  # no duplicate child runs, the searcher kept its count
    before = killed["children"]
    assert all(
        before[t] == c.info.run_id
        for c in children2
        for t in [c.data.tags["cytoray.trial_id"]]
        if t in before
    )
    exp = tmp / "study" / "tune" / "syncgan_ratio"
    results = {
        p.parent.name: p.read_text().count('"final": 1') for p in exp.glob("trial_fn_*/result.json")
    }
    assert all(results[name] == 1 for name in killed["done"])  # finished trials were not rerun


@pytest.mark.slow  # ~6 min: two `ray start` nodes and a study on them (make test-all)
@pytest.mark.skipif(
    shutil.which("ray") is None and not (Path(sys.executable).parent / "ray").exists(),
    reason="ray CLI not installed",
)
def test_study_on_a_two_node_ray_cluster(tmp_path):
    """Two trials at once, each Ray Train worker reserving 2 CPUs on two 2-CPU nodes: one trial's
    stages train on each node (the node id each stage records) into the one cache under --out,
    and the final step reuses the best trial's bundle from it."""
    import ray

    ray.shutdown()  # this test process may hold a local cluster from earlier tests
    ray_bin = str(Path(sys.executable).parent / "ray")
    # Token authentication stays on: every node and the driver say so and share ~/.ray/auth_token.
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"}
    head = subprocess.run(
        [
            ray_bin,
            "start",
            "--head",
            "--port=6399",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-port=8299",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    try:
        assert head.returncode == 0, head.stderr[-3000:]
        worker = subprocess.run(
            [ray_bin, "start", "--address=127.0.0.1:6399", "--num-cpus=2", "--disable-usage-stats"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert worker.returncode == 0, worker.stderr[-3000:]
        nodes = run(
            [
                "-c",
                "import ray; ray.init(address='127.0.0.1:6399'); print(len([n for n in ray.nodes() if n['Alive']]))",
            ],
            cwd=tmp_path,
            env={"RAY_AUTH_MODE": "token"},
        )  # a fresh process: Ray reads the auth mode once
        assert nodes.stdout.strip().splitlines()[-1] == "2", nodes.stderr[-2000:]
        r = run(
            [
                str(STUDY),
                "--smoke-test",
                "--out",
                str(tmp_path / "study"),
                "--address",
                "127.0.0.1:6399",
                "--set",
                "tune.num_samples=2",
                "--set",
                "tune.max_concurrent=2",
                "--set",
                "tune.trial_cpu=0",
                "--set",
                "run.cpus_per_worker=2",  # a node holds one trial's worker: the two must spread
            ],
            cwd=tmp_path,
            env={"RAY_AUTH_MODE": "token"},
        )
        assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
        assert (tmp_path / "study" / "best.json").is_file()
        cache = tmp_path / "study" / "cache"
        metas = [json.loads(m.read_text()) for m in cache.glob("*/final/meta.json")]
        nodes = {m["node"]["id"] for m in metas}
        print("stages by node:", sorted((m["node"]["id"][:8], m["label"]) for m in metas))
        assert len(nodes) == 2, [(m["label"], m["node"]) for m in metas]  # trials on both nodes
        # ... written into the one cache under --out, from which the final step (in this
        # process, on the head) reads the best trial's bundle instead of training it again
        assert "reusing bundle" in r.stderr, r.stderr[-3000:]
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env)
