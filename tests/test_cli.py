"""The `cytoray` command end to end on data the project makes: simulate → validate → masks,
train → generate → fid, and the MLflow runs a training leaves behind."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_python

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("single_ray_instance")  # see conftest.py


def cytoray(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = run_python(["-m", "cytoray.cli", *args], cwd or ROOT)
    if check and r.returncode != 0:
        raise AssertionError(
            f"cytoray {' '.join(args)} → {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        )
    return r


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("kind", ["cytology", "histology"])
def test_simulate_validate_masks(tmp_path, kind):
    a, b = tmp_path / "a", tmp_path / "b"
    cytoray("simulate", "--kind", kind, "--out", str(a), "--n", "20", "--size", "32", "--seed", "3")
    cytoray("simulate", "--kind", kind, "--out", str(b), "--n", "20", "--size", "32", "--seed", "3")
    assert tree_digest(a) == tree_digest(b)  # same seed, same bytes
    r = cytoray(
        "simulate", "--kind", kind, "--out", str(a), "--n", "20", "--size", "32", check=False
    )
    assert r.returncode == 2 and "not empty" in r.stderr and "Traceback" not in r.stderr
    rep = json.loads(cytoray("validate", str(a), "--json").stdout)
    assert (
        rep["usable"] and rep["classes"] == {"benign": 10, "malignant": 10} and rep["masks"] == 20
    )
    res = json.loads(
        cytoray("masks", "--data", str(a), "--out", str(tmp_path / "m"), "--eval", "--json").stdout
    )
    assert (
        res["n"] == 20
        and res["n_evaluated"] == 20
        and res["dice"] > 0.85
        and 0 < res["iou"] <= res["dice"]
    )
    again = json.loads(
        cytoray("masks", "--data", str(a), "--out", str(tmp_path / "m"), "--json").stdout
    )
    assert again["cache_hits"] == 20


def test_train_generate_fid_and_mlflow(tmp_path):
    out = tmp_path / "gan"
    small = [
        "--set",
        "data.sim_n=40",
        "--set",
        "gan.g_base=8",
        "--set",
        "gan.d_base=8",
        "--set",
        "gan.z_dim=16",
        "--set",
        "run.sample_every=1",
    ]
    r = cytoray(
        "train",
        "gan",
        "--simulate",
        "--size",
        "32",
        "--epochs",
        "2",
        "--out",
        str(out),
        *small,
        cwd=tmp_path,
    )
    assert "trained gan" in r.stdout and "gan/benign" in r.stdout
    cytoray(
        "generate",
        "--checkpoint",
        str(out),
        "--n",
        "6",
        "--cls",
        "benign",
        "--out",
        str(tmp_path / "synth"),
    )
    assert len(list((tmp_path / "synth" / "benign").glob("*.png"))) == 6
    cytoray("simulate", "--out", str(tmp_path / "real"), "--n", "12", "--size", "32")
    res = json.loads(
        cytoray("fid", str(tmp_path / "synth"), str(tmp_path / "real" / "benign"), "--json").stdout
    )
    assert {"fid", "kid_mean", "kid_std", "feature_extractor"} <= set(res)
    assert (
        res["feature_extractor"] == "inception-v3-nv-torchscript"
        and res["fid"] > 0
        and res["kid_subset_size"] == 6
    )
    # MLflow (default sqlite store in the working directory): one run, per-epoch losses, sample grids.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cytoray-train")
    (run,) = client.search_runs([exp.experiment_id])
    hist = client.get_metric_history(run.info.run_id, "gan/benign/loss_g")
    assert [m.step for m in hist] == [0, 1]
    assert run.data.params["generator"] == "gan" and run.data.params["gan.epochs"] == "2"
    arts = [a.path for a in client.list_artifacts(run.info.run_id, "samples/gan/benign")]
    assert len(arts) == 2


def test_train_cyclegan_from_two_folders_then_generate(tmp_path):
    hist, cyto, out = tmp_path / "hist", tmp_path / "cyto", tmp_path / "cg"
    cytoray(
        "simulate",
        "--kind",
        "histology",
        "--out",
        str(hist),
        "--n",
        "30",
        "--size",
        "32",
        "--seed",
        "1",
    )
    cytoray("simulate", "--kind", "cytology", "--out", str(cyto), "--n", "30", "--size", "32")
    small = [
        "--set",
        "cyclegan.g_base=8",
        "--set",
        "cyclegan.d_base=8",
        "--set",
        "cyclegan.n_blocks=2",
        "--set",
        "min_per_class=5",
    ]
    args = [
        "train",
        "cyclegan",
        "--data",
        str(cyto),
        "--source",
        str(hist),
        "--size",
        "32",
        "--epochs",
        "2",
        "--out",
        str(out),
    ]
    r = cytoray(*args, *small, cwd=tmp_path)
    assert "trained cyclegan" in r.stdout and "cyclegan/malignant" in r.stdout
    assert (out / "histology_split.json").is_file() and (out / "cytology_split.json").is_file()
    losses = [
        line.split() for line in r.stdout.splitlines() if line.strip().startswith("cyclegan/")
    ]
    assert all(
        float(w[2]) > float(w[4]) for w in losses
    )  # loss_g fell over the two epochs, for both classes
    cytoray(
        "generate",
        "--checkpoint",
        str(out),
        "--n",
        "5",
        "--cls",
        "benign",
        "--out",
        str(tmp_path / "synth"),
    )
    assert len(list((tmp_path / "synth" / "benign").glob("*.png"))) == 5
    again = cytoray(
        *args, *small, cwd=tmp_path
    )  # same folders: both splits reused, both stages cached
    assert again.stdout.count("(cached)") == 2 and "making a new split" not in again.stderr
    r = cytoray("train", "cyclegan", "--data", str(cyto), "--out", str(tmp_path / "o"), check=False)
    assert (
        r.returncode == 2 and "--source HISTOLOGY_DIR" in r.stderr and not (tmp_path / "o").exists()
    )
    r = cytoray(
        "train",
        "gan",
        "--data",
        str(cyto),
        "--source",
        str(hist),
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert r.returncode == 2 and "--source" in r.stderr and "Traceback" not in r.stderr


def test_bad_cli_input_is_one_line(tmp_path):
    r = cytoray(
        "train",
        "syncgan",
        "--data",
        str(tmp_path / "missing"),
        "--out",
        str(tmp_path / "o"),
        check=False,
    )
    assert r.returncode == 2 and "folder not found" in r.stderr and "Traceback" not in r.stderr
    r = cytoray(
        "train",
        "syncgan",
        "--simulate",
        "--out",
        str(tmp_path / "o"),
        "--set",
        "cgan.lamda=3",
        check=False,
    )
    assert r.returncode == 2 and "unknown key 'lamda'" in r.stderr
    r = cytoray(
        "generate",
        "--checkpoint",
        str(tmp_path),
        "--n",
        "2",
        "--cls",
        "benign",
        "--out",
        str(tmp_path / "s"),
        check=False,
    )
    assert r.returncode == 2 and "not a cytoray generator checkpoint" in r.stderr
    r = cytoray("fid", str(tmp_path / "nope"), str(tmp_path), "--json", check=False)
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr
