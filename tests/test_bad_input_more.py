"""The bad-input table, second half (issue 21): no user data lost, no code run from a folder
someone else can write, no traceback, no hang. Each row: exit 2 (validate: 1, a report), one
line naming the file or key, no traceback, and nothing written or changed (a dataset given as
--out is byte-identical afterwards). Hangs run in a subprocess with a time limit; the rows that
plant a pickle assert its payload never ran. Every row fails before Ray starts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import blob_image, two_class_folder, write_png

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import _cli, _one_line, _study  # noqa: E402


def tree(root: Path) -> dict[str, str]:
    """Every file under root with its sha256 (symlinks as their target): 'byte-identical afterwards'."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = "dir"
    return out


@pytest.fixture
def ds(tmp_path) -> Path:
    """A real-looking dataset: two class folders of images, masks/ included."""
    root = two_class_folder(tmp_path / "ds", 6)
    for c in ("benign", "malignant"):
        write_png(
            root / c / "masks" / "00.png", (blob_image(99)[..., 0] < 128).astype("uint8") * 255
        )
    return root


class Payload:
    """A pickle that, when loaded, writes `marker`: what a colleague with write access could plant."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def _row(argv: list[str], fragment: str, capsys, watch: Path, code: int = 2) -> str:
    before = tree(watch)
    got, err = _cli(argv, capsys)
    assert got == code and fragment in err, err
    _one_line(err)
    assert tree(watch) == before  # nothing written, nothing changed
    return err


# ----------------------------------------------------------------------------- 1. data destroyed


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_generate_onto_a_dataset_leaves_it_byte_identical(ds, tmp_path, capsys, overwrite):
    """`generate --out DATASET`: <out>/<cls> is a real class folder; never replaced, --overwrite or not."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    frag = (
        "holds files this command did not write"
        if overwrite
        else "output folder exists and is not empty"
    )
    _row(
        [
            "generate",
            "--checkpoint",
            str(bundle),
            "--n",
            "2",
            "--cls",
            "benign",
            "--out",
            str(ds),
            *overwrite,
        ],
        f"{ds / 'benign'}: {frag}",
        capsys,
        tmp_path,
    )


def test_generate_into_its_own_checkpoint_is_refused(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "generator.json").write_text('{"generator": "gan"}')
    for out, cls in (
        (tmp_path, "bundle"),
        (tmp_path.parent, tmp_path.name),
    ):  # <out>/<cls> is, or holds, the checkpoint
        _row(
            [
                "generate",
                "--checkpoint",
                str(bundle),
                "--n",
                "2",
                "--cls",
                cls,
                "--out",
                str(out),
                "--overwrite",
            ],
            "overlaps the command's input",
            capsys,
            tmp_path,
        )


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_pull_onto_a_dataset_is_refused_before_anything_is_pulled(ds, tmp_path, capsys, overwrite):
    _row(
        [
            "pull",
            "x@champion",
            "--n",
            "2",
            "--cls",
            "malignant",
            "--out",
            str(ds),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
            *overwrite,
        ],
        f"{ds / 'malignant'}",
        capsys,
        tmp_path,
    )


class FakeGen:
    classes = ["benign", "malignant"]

    def sample(self, n, cls, seed=0):
        import numpy as np

        return np.full((n, 8, 8, 3), 7 * seed, np.uint8), np.ones((n, 8, 8), bool)


def test_samples_replace_only_a_previous_sample_and_only_with_overwrite(ds, tmp_path):
    """The path `pull` takes for every class of a registered generator (no --cls)."""
    from cytoray.cli import _write_samples
    from cytoray.errors import CytorayError

    before = tree(ds)
    with pytest.raises(CytorayError, match="did not write"):
        _write_samples(FakeGen(), 2, FakeGen.classes, str(ds), 0, overwrite=True)
    assert tree(ds) == before
    out = tmp_path / "synth"
    _write_samples(FakeGen(), 2, FakeGen.classes, str(out), 0)
    with pytest.raises(CytorayError, match="pass --overwrite"):
        _write_samples(FakeGen(), 2, FakeGen.classes, str(out), 1)
    _write_samples(
        FakeGen(), 3, FakeGen.classes, str(out), 1, overwrite=True
    )  # its own previous output: replaced
    assert sorted(p.name for p in (out / "benign").glob("*.png")) == [
        f"benign_synth_{i:04d}.png" for i in range(3)
    ]


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_segment_never_writes_over_its_input(ds, tmp_path, capsys, where):
    out = {"same": ds, "inside": ds / "benign" / "seg", "around": tmp_path}[where]
    for flags in ([], ["--overwrite"]):
        _row(
            ["segment", str(tmp_path / "no-segmenter"), str(ds), "--out", str(out), *flags],
            "overlaps the command's input",
            capsys,
            tmp_path,
        )


def test_segment_into_a_non_empty_folder_needs_overwrite_and_then_only_its_own(tmp_path, capsys):
    other = tmp_path / "other"
    write_png(other / "keep.png", blob_image(1))
    (tmp_path / "in").mkdir()
    _row(
        ["segment", "seg@champion", str(tmp_path / "in"), "--out", str(other)],
        "pass --overwrite",
        capsys,
        tmp_path,
    )
    _row(
        ["segment", "seg@champion", str(tmp_path / "in"), "--out", str(other), "--overwrite"],
        "did not write",
        capsys,
        tmp_path,
    )


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--out", "{ds}", "--overwrite"], "holds files this command did not write"),
        (["--out", "{ds}"], "output folder exists and is not empty"),
        (["--out", ""], "--out '': give the path"),
        (["--out", ".", "--overwrite"], "--out .: is the current folder"),
    ],
)
def test_simulate_never_replaces_a_collected_dataset_or_the_current_folder(
    argv, fragment, ds, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _row(
        ["simulate", "--n", "4", "--size", "16", *[a.format(ds=ds) for a in argv]],
        fragment,
        capsys,
        tmp_path,
    )


def test_simulate_overwrite_replaces_a_simulated_dataset(tmp_path, capsys):
    from cytoray.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--n", "4", "--size", "16"]) == 0
    assert main(["simulate", "--out", str(out), "--n", "4", "--size", "16"]) == 2
    assert (
        main(
            [
                "simulate",
                "--out",
                str(out),
                "--n",
                "4",
                "--size",
                "16",
                "--seed",
                "1",
                "--overwrite",
            ]
        )
        == 0
    )
    assert '"seed": 1' in (out / "simulation.json").read_text()


def test_a_study_name_never_leaves_out(tmp_path, capsys):
    code, err = _study(
        "syncgan_ratio",
        [
            "--smoke-test",
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
            "--set",
            "name=../../escape",
        ],
        capsys,
    )
    assert code == 2 and "name='../../escape'" in err, err
    _one_line(err)
    assert sorted(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 2. code from files a user does not own


def _plant(out: Path, marker: Path, record: str | None) -> Path:
    exp = out / "tune" / "syncgan_ratio"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))
    if record is not None:
        (out / "tune" / "syncgan_ratio.cytoray.json").write_text(record)
    return exp


@pytest.mark.parametrize("record", [None, '{"tuner.pkl": "0000"}', "not json"])
def test_resume_never_unpickles_a_planted_tuner_pkl(tmp_path, capsys, record):
    marker = tmp_path / "marker"
    exp = _plant(tmp_path / "out", marker, record)
    before = tree(tmp_path)
    code, err = _study(
        "syncgan_ratio",
        [
            "--smoke-test",
            "--resume",
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
        capsys,
    )
    assert code == 2 and f"{exp / 'tuner.pkl'}: " in err and "refusing to unpickle" in err, err
    _one_line(err)
    assert not marker.exists() and tree(tmp_path) == before


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_resume_refuses_tune_state_another_user_wrote(tmp_path, capsys):
    from cytoray.experiments.tune_state import record_tune_state

    marker = tmp_path / "marker"
    exp = _plant(tmp_path / "out", marker, None)
    record_tune_state(exp)  # the hash matches: only the owner gives it away
    (exp / "searcher-state.pkl").write_bytes(pickle.dumps(Payload(marker)))
    os.chown(exp / "searcher-state.pkl", 65534, 65534)
    code, err = _study(
        "syncgan_ratio",
        [
            "--smoke-test",
            "--resume",
            "--out",
            str(tmp_path / "out"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/m.db",
        ],
        capsys,
    )
    assert code == 2 and "searcher-state.pkl: owned by uid 65534" in err, err
    assert not marker.exists()


def test_resume_accepts_state_it_recorded(tmp_path):
    from cytoray.experiments.tune_state import record_tune_state, verify_tune_state

    exp = tmp_path / "tune" / "s"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"a": 1}))
    record_tune_state(exp)
    verify_tune_state(exp)  # no error
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"a": 2}))
    with pytest.raises(Exception, match="changed since cytoray wrote it"):
        verify_tune_state(exp)


def test_a_registered_classifier_pickle_never_runs_even_when_torch_is_told_to(
    tmp_path, monkeypatch
):
    from cytoray.classify.bundle import load_classifier_bundle
    from cytoray.errors import CytorayError

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    b = tmp_path / "clf"
    b.mkdir()
    (b / "classifier.json").write_text(
        '{"classifier": "smallcnn", "class_names": ["a", "b"], "input_size": 32, "params": {}}'
    )
    import torch

    torch.save({"w": Payload(marker)}, b / "model.pt")
    assert not marker.exists()
    with pytest.raises(CytorayError, match="model.pt: not loadable weights"):
        load_classifier_bundle(b)
    assert not marker.exists()


def test_every_torch_load_says_weights_only_true():
    import re

    for p in (ROOT / "cytoray").rglob("*.py"):
        for m in re.finditer(r"torch\.load\(([^)]*)\)", p.read_text()):
            assert "weights_only=True" in m.group(1), f"{p}: {m.group(0)}"


@pytest.mark.parametrize("base", ["/etc/passwd", "../../../../../etc/passwd", "~/x.yaml"])
def test_base_never_reaches_outside_the_config_folder(tmp_path, ds, capsys, base):
    cfg = tmp_path / "cfgs" / "a.yaml"
    cfg.parent.mkdir()
    cfg.write_text(f"_base_: {base}\n")
    _row(
        ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--config", str(cfg)],
        f"{cfg}: _base_: ",
        capsys,
        tmp_path,
    )


def test_resume_finds_the_parent_of_an_out_with_a_quote(tmp_path):
    from mlflow import MlflowClient

    from cytoray.tracking.study_logger import find_or_create_parent

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("s")
    first = find_or_create_parent(client, exp, "s", str(tmp_path / "it's"), resume=False)
    other = find_or_create_parent(client, exp, "s", str(tmp_path / "other"), resume=False)
    assert (
        find_or_create_parent(client, exp, "s", str(tmp_path / "it's"), resume=True)
        == first
        != other
    )


# ----------------------------------------------------------------------------- helpers of the sibling tables (hangs, pixel bombs)


class Hang(BaseException):
    """Raised by the alarm in `time_limit`: the row hung (not an Exception, so no handler eats it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """A hang row's limit, in process (SIGALRM interrupts a Python loop or a sleeping retry)."""
    import signal

    def alarm(*_):
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _run_limited(argv: list[str], cwd: Path, limit: float = 60) -> subprocess.CompletedProcess:
    """The CLI in a subprocess that must answer within `limit` seconds (a hang fails the row)."""
    return subprocess.run(
        [sys.executable, "-m", "cytoray.cli", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=limit,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _bomb_png(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A 65-byte PNG whose header claims w x h (PIL.DecompressionBombError before)."""
    import struct
    import zlib

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


LIMIT_TEXT = "100000x100000 px is over the 100000000 px limit"


def _untrained_segmenter(out: Path) -> Path:
    """A segmenter bundle `cytoray segment` loads (untrained: these rows never get to its masks)."""
    from cytoray.masks.nucleus_net import write_segmenter_bundle
    from cytoray.nets import UNet

    kw = dict(in_ch=3, out_ch=1, base=4, depth=2, norm="batch", dropout=0.0, out_act="none")
    return write_segmenter_bundle(
        out, UNet(**kw).state_dict(), kw, 0.5, 1.0, {"trained_on": "nothing (test)"}
    )


def test_segment_stopped_by_a_decompression_bomb_writes_no_mask(ds, tmp_path, capsys):
    seg = _untrained_segmenter(tmp_path / "seg")
    bomb = _bomb_png(
        ds / "malignant" / "zz.png"
    )  # after the benign images: those were segmented first
    err = _row(
        ["segment", str(seg), str(ds), "--out", str(tmp_path / "masks")],
        f"{bomb}: {LIMIT_TEXT}",
        capsys,
        tmp_path,
    )
    assert "CYTORAY_MAX_IMAGE_PIXELS" in err


def test_segment_overwrite_replaces_its_own_output_only(ds, tmp_path, capsys):
    from cytoray.cli import main

    seg = _untrained_segmenter(tmp_path / "seg")
    out = tmp_path / "masks"
    assert main(["segment", str(seg), str(ds / "benign"), "--out", str(out)]) == 0
    assert (out / "segment.json").is_file() and len(list(out.glob("*.png"))) == 6
    assert (
        main(["segment", str(seg), str(ds / "benign"), "--out", str(out)]) == 2
    )  # not without --overwrite
    assert main(["segment", str(seg), str(ds / "malignant"), "--out", str(out), "--overwrite"]) == 0
    assert str(ds / "malignant") in (out / "segment.json").read_text()
