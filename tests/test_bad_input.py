"""Bad input, one table, one behaviour: a one-line error naming the file, key or address and what
to do, exit code 2, no traceback, and nothing half-written (an output folder is complete or absent).
Every case here is refused before Ray starts; `test_non_ascii_class_names_train_end_to_end` is the
one that trains."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import blob_image, run_python, two_class_folder, write_png

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ds(tmp_path) -> Path:
    """A usable folder: two classes, 12 distinct images each."""
    return two_class_folder(tmp_path / "ds", 12)


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from cytoray.cli import main

    code = main(argv)
    return code, capsys.readouterr().err


def _study(script: str, argv: list[str], capsys) -> tuple[int, str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"study_{script}", ROOT / "studies" / f"{script}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    code = mod.main(argv)
    return code, capsys.readouterr().err


def _one_line(err: str) -> None:
    assert (
        "Traceback" not in err and len([x for x in err.strip().splitlines() if "error:" in x]) == 1
    ), err


# ----------------------------------------------------------------------------- the table

# case → (argv builder, expected fragment). Paths: {ds} a usable dataset, {tmp} the test's folder.
CLI_CASES = {
    "simulate --out is a file": (
        ["simulate", "--out", "{tmp}/file/sub", "--n", "4", "--size", "16"],
        "{tmp}/file: ",
    ),
    "simulate --out unwritable": (
        ["simulate", "--out", "/proc/cytoray-nope/x", "--n", "4", "--size", "16"],
        "/proc/cytoray-nope",
    ),
    "generate --n 0": (
        ["generate", "--checkpoint", "{bundle}", "--n", "0", "--cls", "benign", "--out", "{tmp}/g"],
        "--n 0",
    ),
    "generate --n -1": (
        [
            "generate",
            "--checkpoint",
            "{bundle}",
            "--n",
            "-1",
            "--cls",
            "benign",
            "--out",
            "{tmp}/g",
        ],
        "--n -1",
    ),
    "generate not a bundle": (
        ["generate", "--checkpoint", "{tmp}", "--n", "2", "--cls", "benign", "--out", "{tmp}/g"],
        "not a cytoray generator checkpoint",
    ),
    "fid --size 0": (["fid", "{ds}/benign", "{ds}/malignant", "--size", "0"], "--size 0"),
    "fid one image": (["fid", "{one}", "{ds}/malignant"], "at least 2"),
    "train unknown generator": (
        ["train", "gann", "--data", "{ds}", "--out", "{tmp}/o"],
        "unknown generator 'gann' (valid: ",
    ),
    "train --workers 0": (
        ["train", "gan", "--data", "{ds}", "--out", "{tmp}/o", "--workers", "0"],
        "run.num_workers=0",
    ),
    "train dropout=2": (
        ["train", "syncgan", "--data", "{ds}", "--out", "{tmp}/o", "--set", "cgan.dropout=2"],
        "cgan.dropout=2",
    ),
    "train lam=nan": (
        ["train", "syncgan", "--data", "{ds}", "--out", "{tmp}/o", "--set", "cgan.lam=.nan"],
        "not a finite number",
    ),
    "train lr=inf": (
        ["train", "syncgan", "--data", "{ds}", "--out", "{tmp}/o", "--set", "cgan.lr=.inf"],
        "not a finite number",
    ),
    "train lr=ten": (
        ["train", "syncgan", "--data", "{ds}", "--out", "{tmp}/o", "--set", "cgan.lr=ten"],
        "expected a number",
    ),
    "train malformed --set": (
        ["train", "gan", "--data", "{ds}", "--out", "{tmp}/o", "--set", "gan.epochs"],
        "expected KEY=VALUE",
    ),
    "train unknown key": (
        ["train", "gan", "--data", "{ds}", "--out", "{tmp}/o", "--set", "gan.epoch=3"],
        "unknown key 'epoch'",
    ),
    "train batch 1": (
        ["train", "gan", "--data", "{ds}", "--out", "{tmp}/o", "--set", "gan.batch_size=1"],
        "batch_size=1",
    ),
    "train missing folder": (
        ["train", "gan", "--data", "{tmp}/missing", "--out", "{tmp}/o"],
        "folder not found",
    ),
    "train symlink to nothing": (
        ["train", "gan", "--data", "{dangling}", "--out", "{tmp}/o"],
        "file not found",
    ),
    "train corrupt image": (
        ["train", "gan", "--data", "{corrupt}", "--out", "{tmp}/o"],
        "corrupt or truncated",
    ),
    "train zero-byte image": (
        ["train", "gan", "--data", "{empty}", "--out", "{tmp}/o"],
        "not a readable image",
    ),
    "train single class": (
        ["train", "gan", "--data", "{single}", "--out", "{tmp}/o"],
        "at least two class",
    ),
    "train too few per class": (["train", "gan", "--data", "{few}", "--out", "{tmp}/o"], "too few"),
    "pull unknown model": (
        [
            "pull",
            "nosuch@champion",
            "--n",
            "1",
            "--out",
            "{tmp}/p",
            "--tracking-uri",
            "sqlite:///{tmp}/m.db",
        ],
        "no MLflow store",
    ),
    "pull malformed ref": (["pull", "justaname", "--n", "1", "--out", "{tmp}/p"], "NAME@ALIAS"),
    "classify empty folder": (["classify", "x@champion", "{tmp}/emptydir"], "no images"),
}


@pytest.fixture
def paths(tmp_path, ds) -> dict[str, str]:
    (tmp_path / "file").write_text("a file where a folder would go")
    (tmp_path / "emptydir").mkdir()
    one = tmp_path / "one"
    write_png(one / "a.png", blob_image(1))

    def variant(name: str, fn) -> str:
        import shutil

        root = tmp_path / name
        shutil.copytree(ds, root)
        fn(root)
        return str(root)

    return {
        "tmp": str(tmp_path),
        "ds": str(ds),
        "one": str(one),
        "bundle": str(tmp_path),
        "dangling": variant(
            "dangling", lambda r: os.symlink(r / "nowhere.png", r / "benign" / "zz.png")
        ),
        "corrupt": variant(
            "corrupt",
            lambda r: (r / "benign" / "zz.png").write_bytes(
                (r / "benign" / "00.png").read_bytes()[:60]
            ),
        ),
        "empty": variant("empty", lambda r: (r / "benign" / "zz.png").write_bytes(b"")),
        "single": variant("single", lambda r: __import__("shutil").rmtree(r / "malignant")),
        "few": variant(
            "few", lambda r: [p.unlink() for p in sorted((r / "malignant").glob("*.png"))[2:]]
        ),
    }


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_input_is_one_line_exit_2_nothing_written(case, paths, tmp_path, capsys):
    import ray

    argv, fragment = CLI_CASES[case]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    code, err = _cli([a.format(**paths) for a in argv], capsys)
    assert code == 2 and fragment.format(**paths) in err, err
    _one_line(err)
    after = sorted(str(p) for p in tmp_path.rglob("*"))
    assert after == before, sorted(
        set(after) - set(before)
    )  # nothing half-written, no stray database
    assert not ray.is_initialized()


STUDY_CASES = {
    "ratio: unknown key": (
        "syncgan_ratio",
        ["--set", "generator.cgan.lamda=3"],
        "unknown key 'lamda'",
    ),
    "ratio: NaN": ("syncgan_ratio", ["--set", "ratio=.nan"], "not a finite number"),
    "ratio: policy without the generator": (
        "syncgan_ratio",
        ["--set", "policy=orig+gan"],
        "must draw from the study's generator",
    ),
    "ratio: unreachable Ray address": (
        "syncgan_ratio",
        ["--address", "127.0.0.1:9"],
        "no Ray cluster answers at 127.0.0.1:9",
    ),
    "ratio: corrupt folder": ("syncgan_ratio", ["--data", "{corrupt}"], "corrupt or truncated"),
    "ratio: --out is a file": (
        "syncgan_ratio",
        ["--out", "{tmp}/file/out"],
        "{tmp}/file/out: Not a directory",
    ),
    "baselines: unknown policy": (
        "augmentation_baselines",
        ["--set", "policies=[orig,synth]"],
        "unknown source 'synth'",
    ),
    "histo: random NST features": (
        "histo_to_cyto",
        ["--set", "generators.nst.features=random"],
        "--allow-random-features",
    ),
    "histo: sizes differ": (
        "histo_to_cyto",
        ["--set", "source.size=48"],
        "source.size=48 != data.size=32",
    ),
}


@pytest.mark.parametrize("case", sorted(STUDY_CASES))
def test_study_bad_input_is_refused_before_ray_starts(case, paths, tmp_path, capsys):
    import ray

    script, argv, fragment = STUDY_CASES[case]
    args = [a.format(**paths) for a in argv]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    code, err = _study(
        script, ["--smoke-test", "--tracking-uri", f"sqlite:///{tmp_path}/m.db", *args], capsys
    )
    assert code == 2 and fragment.format(**paths) in err, err
    _one_line(err)
    assert (
        not ray.is_initialized()
        and not (tmp_path / "m.db").exists()
        and not (tmp_path / "out" / "cache").exists()
    )


def test_a_second_study_on_the_same_out_is_refused_naming_the_holder(tmp_path, capsys):
    from cytoray.experiments.driver import hold_study_lock

    (tmp_path / "out").mkdir()
    lock = hold_study_lock(tmp_path / "out")
    try:
        code, err = _study(
            "syncgan_ratio",
            [
                "--smoke-test",
                "--out",
                str(tmp_path / "out"),
                "--tracking-uri",
                f"sqlite:///{tmp_path}/m.db",
            ],
            capsys,
        )
    finally:
        lock.close()
    assert code == 2 and f"another study is running in this folder (pid {os.getpid()}" in err
    _one_line(err)


def test_unreachable_tracking_server_is_named_within_30_s(tmp_path, capsys):
    import time

    t0 = time.monotonic()
    code, err = _study(
        "syncgan_ratio",
        ["--smoke-test", "--out", str(tmp_path / "out"), "--tracking-uri", "http://127.0.0.1:9"],
        capsys,
    )
    assert code == 2 and "cannot reach the MLflow tracking server at http://127.0.0.1:9" in err, err
    assert time.monotonic() - t0 < 30
    _one_line(err.split("\n")[-2] if "WARNING" in err else err)


# ----------------------------------------------------------------------------- safe by construction


def test_class_names_from_metadata_never_leave_the_output_folder(tmp_path, capsys):
    """A registered bundle whose class is '../victim' must not make `pull`/`generate` touch a folder outside --out."""
    from cytoray.cli import _write_samples
    from cytoray.errors import CytorayError

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")

    class Evil:
        classes = ["benign", "../victim"]

        def sample(self, n, cls, seed=0):
            return np.zeros((n, 8, 8, 3), np.uint8), None

    with pytest.raises(CytorayError, match=r"'\.\./victim' is not a plain folder name"):
        _write_samples(Evil(), 2, Evil.classes, str(tmp_path / "out"), 0)
    assert (victim / "keep.txt").read_text() == "precious" and not (tmp_path / "out").exists()


def test_written_files_follow_the_umask(tmp_path):
    from cytoray.io import UMASK, atomic_dir, write_text

    write_text(tmp_path / "a.txt", "x")
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~UMASK


@pytest.mark.usefixtures("single_ray_instance")
def test_non_ascii_class_names_train_end_to_end(tmp_path):
    """A class folder named 'bénin' (and a space in the dataset path) trains under Ray Train and samples."""
    root = tmp_path / "my data"
    for c, cls in enumerate(("bénin", "malin")):
        for i in range(12):
            write_png(root / cls / f"{i:02d}.png", blob_image(50 * c + i))
    out = tmp_path / "gén"
    r = run_python(
        [
            "-m",
            "cytoray.cli",
            "train",
            "gan",
            "--data",
            str(root),
            "--size",
            "32",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--set",
            "gan.g_base=8",
            "--set",
            "gan.d_base=8",
            "--set",
            "gan.z_dim=16",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "Traceback" not in r.stderr and "gan/bénin" in r.stdout
    r = run_python(
        [
            "-m",
            "cytoray.cli",
            "generate",
            "--checkpoint",
            str(out),
            "--n",
            "2",
            "--cls",
            "bénin",
            "--out",
            str(tmp_path / "s"),
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0 and len(list((tmp_path / "s" / "bénin").glob("*.png"))) == 2, r.stderr[
        -2000:
    ]
    assert json.loads((out / "generator.json").read_text())["classes"] == ["bénin", "malin"]


@pytest.mark.usefixtures("single_ray_instance")
def test_a_training_that_makes_no_step_is_failed_and_leaves_no_bundle(tmp_path):
    """3 images per class, split 1:1:1: each class GAN trains on one image, every batch is under 2 (BatchNorm)."""
    from mlflow import MlflowClient

    root = tmp_path / "few"
    for c, cls in enumerate(("benign", "malignant")):
        for i in range(3):  # a 1:1:1 split leaves one training image per class
            write_png(root / cls / f"{i}.png", blob_image(10 * c + i))
    out = tmp_path / "o"
    r = run_python(
        [
            "-m",
            "cytoray.cli",
            "train",
            "gan",
            "--data",
            str(root),
            "--size",
            "32",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--set",
            "gan.g_base=8",
            "--set",
            "gan.d_base=8",
            "--set",
            "data.split_ratios=[1,1,1]",
        ],
        cwd=tmp_path,
    )
    assert (
        r.returncode == 2 and "made no optimiser step" in r.stderr and "Traceback" not in r.stderr
    ), r.stderr[-3000:]
    assert not (out / "generator.json").exists()  # nothing `generate` or `pull` would load
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cytoray-train").experiment_id])
    assert run.info.status == "FAILED"
