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
        write_png(root / c / "masks" / "00.png", (blob_image(99)[..., 0] < 128).astype("uint8") * 255)
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
    frag = "holds files this command did not write" if overwrite else "output folder exists and is not empty"
    _row(["generate", "--checkpoint", str(bundle), "--n", "2", "--cls", "benign", "--out", str(ds), *overwrite],
         f"{ds / 'benign'}: {frag}", capsys, tmp_path)  # fmt: skip


def test_generate_into_its_own_checkpoint_is_refused(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "generator.json").write_text('{"generator": "gan"}')
    for out, cls in ((tmp_path, "bundle"), (tmp_path.parent, tmp_path.name)):  # <out>/<cls> is, or holds, the checkpoint
        _row(["generate", "--checkpoint", str(bundle), "--n", "2", "--cls", cls, "--out", str(out), "--overwrite"],
             "overlaps the command's input", capsys, tmp_path)  # fmt: skip


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_pull_onto_a_dataset_is_refused_before_anything_is_pulled(ds, tmp_path, capsys, overwrite):
    _row(["pull", "x@champion", "--n", "2", "--cls", "malignant", "--out", str(ds), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
          *overwrite], f"{ds / 'malignant'}", capsys, tmp_path)  # fmt: skip


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
    _write_samples(FakeGen(), 3, FakeGen.classes, str(out), 1, overwrite=True)  # its own previous output: replaced
    assert sorted(p.name for p in (out / "benign").glob("*.png")) == [f"benign_synth_{i:04d}.png" for i in range(3)]


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_segment_never_writes_over_its_input(ds, tmp_path, capsys, where):
    out = {"same": ds, "inside": ds / "benign" / "seg", "around": tmp_path}[where]
    for flags in ([], ["--overwrite"]):
        _row(["segment", str(tmp_path / "no-segmenter"), str(ds), "--out", str(out), *flags], "overlaps the command's input",
             capsys, tmp_path)  # fmt: skip


def test_segment_into_a_non_empty_folder_needs_overwrite_and_then_only_its_own(tmp_path, capsys):
    other = tmp_path / "other"
    write_png(other / "keep.png", blob_image(1))
    (tmp_path / "in").mkdir()
    _row(["segment", "seg@champion", str(tmp_path / "in"), "--out", str(other)], "pass --overwrite", capsys, tmp_path)
    _row(["segment", "seg@champion", str(tmp_path / "in"), "--out", str(other), "--overwrite"], "did not write", capsys, tmp_path)


@pytest.mark.parametrize("argv,fragment", [
    (["--out", "{ds}", "--overwrite"], "holds files this command did not write"),
    (["--out", "{ds}"], "output folder exists and is not empty"),
    (["--out", ""], "--out '': give the path"),
    (["--out", ".", "--overwrite"], "--out .: is the current folder"),
])  # fmt: skip
def test_simulate_never_replaces_a_collected_dataset_or_the_current_folder(argv, fragment, ds, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _row(["simulate", "--n", "4", "--size", "16", *[a.format(ds=ds) for a in argv]], fragment, capsys, tmp_path)


def test_simulate_overwrite_replaces_a_simulated_dataset(tmp_path, capsys):
    from cytoray.cli import main

    out = tmp_path / "sim"
    assert main(["simulate", "--out", str(out), "--n", "4", "--size", "16"]) == 0
    assert main(["simulate", "--out", str(out), "--n", "4", "--size", "16"]) == 2
    assert main(["simulate", "--out", str(out), "--n", "4", "--size", "16", "--seed", "1", "--overwrite"]) == 0
    assert '"seed": 1' in (out / "simulation.json").read_text()


def test_a_study_name_never_leaves_out(tmp_path, capsys):
    code, err = _study("syncgan_ratio", ["--smoke-test", "--out", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                                         "--set", "name=../../escape"], capsys)  # fmt: skip
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
    code, err = _study("syncgan_ratio", ["--smoke-test", "--resume", "--out", str(tmp_path / "out"),
                                         "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capsys)  # fmt: skip
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
    code, err = _study("syncgan_ratio", ["--smoke-test", "--resume", "--out", str(tmp_path / "out"),
                                         "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], capsys)  # fmt: skip
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


def test_a_registered_classifier_pickle_never_runs_even_when_torch_is_told_to(tmp_path, monkeypatch):
    from cytoray.classify.bundle import load_classifier_bundle
    from cytoray.errors import CytorayError

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    b = tmp_path / "clf"
    b.mkdir()
    (b / "classifier.json").write_text('{"classifier": "smallcnn", "class_names": ["a", "b"], "input_size": 32, "params": {}}')
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
    _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--config", str(cfg)], f"{cfg}: _base_: ",
         capsys, tmp_path)  # fmt: skip


def test_resume_finds_the_parent_of_an_out_with_a_quote(tmp_path):
    from mlflow import MlflowClient

    from cytoray.tracking.study_logger import find_or_create_parent

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("s")
    first = find_or_create_parent(client, exp, "s", str(tmp_path / "it's"), resume=False)
    other = find_or_create_parent(client, exp, "s", str(tmp_path / "other"), resume=False)
    assert find_or_create_parent(client, exp, "s", str(tmp_path / "it's"), resume=True) == first != other


# ----------------------------------------------------------------------------- 3. hangs (time-limited)


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
    return subprocess.run([sys.executable, "-m", "cytoray.cli", *argv], cwd=cwd, capture_output=True, text=True, timeout=limit,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip


@pytest.mark.parametrize("split", ["nan:1:1", "inf:1:1", "1e308:1:1"])
def test_validate_split_that_would_loop_forever_answers(split, ds, tmp_path, capsys):
    with time_limit(60):
        _row(["validate", str(ds), "--split", split], f"--split {split}: give three", capsys, tmp_path)


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_answers_in_a_config_and_in_set(ds, tmp_path, capsys):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_bomb())
    flow = "{" + _bomb().replace("\n", ", ").rstrip(", ") + "}"
    with time_limit(60):
        _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--config", str(cfg)], f"{cfg}: expands to more than",
             capsys, tmp_path)  # fmt: skip
        err = _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--set", f"gan.extra={flow}"],
                   "extra': expands to more than", capsys, tmp_path)  # fmt: skip
    assert len(err) < 1000  # one short line, not the 157 MB expansion


def test_a_50_mb_yaml_is_refused_unread(ds, tmp_path, capsys):
    cfg = tmp_path / "big.yaml"
    with open(cfg, "wb") as f:
        f.truncate(50 << 20)  # sparse: 50 MB on paper
    _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--config", str(cfg)], f"{cfg}: 52428800 bytes, over",
         capsys, tmp_path)  # fmt: skip


# ----------------------------------------------------------------------------- 4. tracebacks -> one line

CONFIG_TEXT = {
    "deep": "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "latin1": "gan:\n  epochs: 1 # caf\xe9\n",
    "duplicate": "gan:\n  epochs: 1\n  epochs: 2\n",
}
CONFIG_FRAGMENT = {"deep": "nested more than 100 levels", "latin1": "not UTF-8 (byte 0xe9", "duplicate": "key 'epochs' given twice (line 3)"}


@pytest.mark.parametrize("case", sorted(CONFIG_TEXT))
def test_config_files_that_crashed_or_passed_silently(case, ds, tmp_path, capsys):
    cfg = tmp_path / f"{case}.yaml"
    cfg.write_bytes(CONFIG_TEXT[case].encode("latin-1"))
    _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--config", str(cfg)], f"{cfg}: {CONFIG_FRAGMENT[case]}",
         capsys, tmp_path)  # fmt: skip


@pytest.mark.parametrize("split", ["3:x:1", "0:0:0", "1:1", "-1:1:1"])
def test_validate_split_that_crashed_or_said_usable(split, ds, tmp_path, capsys):
    _row(["validate", str(ds), f"--split={split}"], f"--split {split}: give three", capsys, tmp_path)


def test_split_seed_minus_one(ds, tmp_path, capsys):
    _row(["split", "--data", str(ds), "--out", str(tmp_path / "m.json"), "--seed", "-1"], "--seed -1", capsys, tmp_path)


def test_split_k_2_writes_two_manifests_whatever_the_name(ds, tmp_path, capsys, monkeypatch):
    from cytoray.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["split", "--data", str(ds), "--out", "manifest", "--k", "2", "--size", "16"]) == 0
    a, b = (tmp_path / "manifest_0").read_text(), (tmp_path / "manifest_1").read_text()
    assert a != b and not (tmp_path / "manifest").exists()


def _bomb_png(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A 65-byte PNG whose header claims w x h (PIL.DecompressionBombError before)."""
    import struct
    import zlib

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))  # fmt: skip
    return path


LIMIT_TEXT = "100000x100000 px is over the 100000000 px limit"


@pytest.mark.parametrize("cmd", ["split", "fid", "masks", "train"])
def test_decompression_bomb_is_named_with_the_limit(cmd, ds, tmp_path, capsys):
    bomb = _bomb_png(ds / "benign" / "zz.png")
    argv = {"split": ["split", "--data", str(ds), "--out", str(tmp_path / "m.json")],
            "fid": ["fid", str(ds / "benign"), str(ds / "malignant")],
            "masks": ["masks", "--data", str(ds), "--out", str(tmp_path / "masks")],
            "train": ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o")]}[cmd]  # fmt: skip
    before = tree(tmp_path)
    code, err = _cli(argv, capsys)
    assert code == 2 and f"{bomb}: {LIMIT_TEXT}" in err and "CYTORAY_MAX_IMAGE_PIXELS" in err, err
    _one_line(err)
    assert tree(tmp_path) == before  # masks: refused from the headers, before the first mask is written


def test_masks_on_an_image_under_8_px(ds, tmp_path, capsys):
    tiny = write_png(ds / "benign" / "zz.png", blob_image(3, 32)[:5, :6])
    _row(["masks", "--data", str(ds), "--out", str(tmp_path / "m")], f"{tiny}: image is 6x5 px; nucleus masking needs at least 8x8",
         capsys, tmp_path)  # fmt: skip


def test_a_study_default_config_is_found_outside_the_repository(tmp_path, monkeypatch):
    from cytoray.config import load
    from cytoray.experiments.ratio import RatioStudy

    monkeypatch.chdir(tmp_path)
    assert load(RatioStudy.Config, "configs/studies/syncgan_ratio.yaml").name == "syncgan_ratio"


def test_decompression_bomb_in_validate_is_a_problem_of_that_file(ds, tmp_path, capsys):
    import json

    from cytoray.cli import main

    bomb = _bomb_png(ds / "benign" / "zz.png")
    _bomb_png(ds / "malignant" / "big.png", 20_000, 20_000)  # a valid-sized header of a 400 Mpx image
    before = tree(tmp_path)
    assert main(["validate", str(ds), "--json"]) == 1
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and tree(tmp_path) == before
    problems = {p["file"]: p["problem"] for p in json.loads(cap.out)["problems"]}
    assert problems[str(bomb)].startswith(LIMIT_TEXT), problems
    assert problems[str(ds / "malignant" / "big.png")].startswith("20000x20000 px is over"), problems


def test_the_pixel_limit_is_a_setting(tmp_path, monkeypatch):
    from cytoray.data.images import read_rgb
    from cytoray.errors import DataError

    p = write_png(tmp_path / "a.png", blob_image(0, 32))
    monkeypatch.setenv("CYTORAY_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(DataError, match="32x32 px is over the 1000 px limit"):
        read_rgb(p)
    monkeypatch.setenv("CYTORAY_MAX_IMAGE_PIXELS", "1024")
    assert read_rgb(p).shape == (32, 32, 3)


GEN_JSON = {"not json": ("{nope", "not a readable generator bundle file"), "empty object": ("{}", "generator bundle file lacks generator"),
            "a list": ("[1, 2]", "a generator bundle file holds a JSON object, this holds list")}  # fmt: skip


@pytest.mark.parametrize("case", sorted(GEN_JSON))
def test_generator_json_that_crashed(case, tmp_path, capsys):
    b = tmp_path / "bundle"
    b.mkdir()
    text, frag = GEN_JSON[case]
    (b / "generator.json").write_text(text)
    _row(["generate", "--checkpoint", str(b), "--n", "2", "--cls", "benign", "--out", str(tmp_path / "g")],
         f"{b / 'generator.json'}: {frag}", capsys, tmp_path)  # fmt: skip


def test_truncated_weights_and_foreign_classifier_json(tmp_path):
    from cytoray.classify.bundle import load_classifier_bundle
    from cytoray.errors import CytorayError

    b = tmp_path / "clf"
    b.mkdir()
    (b / "classifier.json").write_text('{"classifier": "smallcnn", "class_names": ["a", "b"], "input_size": 32}')
    import torch

    torch.save({"w": torch.zeros(100)}, b / "model.pt")
    (b / "model.pt").write_bytes((b / "model.pt").read_bytes()[:100])
    with pytest.raises(CytorayError, match="model.pt: not loadable weights"):
        load_classifier_bundle(b)
    for text, frag in (("[]", "holds a JSON object"), ('{"classifier": "x"}', "lacks class_names, input_size"),
                       ('{"classifier": "smallcnn", "class_names": ["a", "b"], "input_size": 10000000}', "input_size 10000000")):  # fmt: skip
        (b / "classifier.json").write_text(text)
        with pytest.raises(CytorayError, match=frag):
            load_classifier_bundle(b)


# ----------------------------------------------------------------------------- 3b. servers that are down or not what they say


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port this test opened and closed again: nothing listens (connection refused)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def silent_port():
    """A 127.0.0.1 port that accepts connections (the kernel's backlog) and never says a word."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def html_404_port():
    """A plain web server on 127.0.0.1 that answers every path with a 404 HTML page."""
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>Not Found</body></html>")

        do_POST = do_GET  # noqa: N815

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def _tracking_argv(cmd: str, uri: str, tmp_path: Path, ds: Path) -> list[str]:
    return {"pull": ["pull", "gen@champion", "--n", "1", "--out", str(tmp_path / "p")],
            "classify": ["classify", "clf@champion", str(ds / "benign")],
            "report": ["report", "--experiment", "syncgan_ratio", "--out", str(tmp_path / "r")],
            "segment": ["segment", "seg@champion", str(ds / "benign"), "--out", str(tmp_path / "s")]}[cmd] + ["--tracking-uri", uri]  # fmt: skip


@pytest.mark.parametrize("cmd", ["pull", "classify", "report", "segment"])
def test_a_tracking_server_that_is_down_is_named_in_seconds(cmd, closed_port, ds, tmp_path, capsys):
    uri = f"http://127.0.0.1:{closed_port}"
    with time_limit(60):  # MLflow's own retries took 250 s and more
        err = _row(_tracking_argv(cmd, uri, tmp_path, ds), f"cannot reach the MLflow tracking server at {uri}", capsys, tmp_path)
    assert "--resume" not in err


def test_a_tracking_server_that_never_answers_is_named_in_seconds(silent_port, ds, tmp_path):
    uri = f"http://127.0.0.1:{silent_port}"
    r = _run_limited(_tracking_argv("pull", uri, tmp_path, ds), tmp_path, limit=30)
    assert r.returncode == 2 and f"cannot reach the MLflow tracking server at {uri} (timed out)" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("cmd", ["pull", "report"])
def test_a_web_server_that_is_not_mlflow_is_not_an_empty_registry(cmd, html_404_port, ds, tmp_path, capsys):
    uri = f"http://127.0.0.1:{html_404_port}"
    err = _row(_tracking_argv(cmd, uri, tmp_path, ds), f"{uri} (while ", capsys, tmp_path)
    assert "not an MLflow tracking server (HTTP 404 on /health)" in err, err


@pytest.mark.parametrize("kind", ["silent", "http", "ray-client"])
def test_a_ray_address_that_is_not_a_ray_head_is_refused_in_seconds(kind, silent_port, html_404_port, closed_port, tmp_path, capsys):
    """--address (and RAY_ADDRESS) to an open port that is not Ray: named before the split or MLflow run."""
    address = {"silent": f"127.0.0.1:{silent_port}", "http": f"127.0.0.1:{html_404_port}", "ray-client": f"ray://127.0.0.1:{closed_port}"}[kind]
    frag = {"silent": "does not answer as a Ray head", "http": "it is not a Ray head", "ray-client": "no Ray cluster answers at"}[kind]
    for argv, env in (([f"--address={address}"], None), ([], address)):
        if env:
            os.environ["RAY_ADDRESS"] = env  # the conftest fixture restores the environment
        with time_limit(60):  # ray.init waited minutes, ignoring Ctrl-C
            code, err = _study("syncgan_ratio", ["--smoke-test", "--out", str(tmp_path / "o"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                                                 *argv], capsys)  # fmt: skip
        assert code == 2 and address in err and frag in err, err
        _one_line(err)
        assert not (tmp_path / "o").exists() and not (tmp_path / "m.db").exists()


def test_train_more_workers_than_cpus_is_refused_before_the_job(ds, tmp_path, capsys):
    _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--workers", "1000"], "run.num_workers=1000", capsys, tmp_path)


def test_train_gpu_on_a_machine_without_one(ds, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--gpu"], "--gpu: 1 worker(s)", capsys, tmp_path)


# ----------------------------------------------------------------------------- 4b. more tracebacks and misleading lines


def test_set_the_generator_section_itself(ds, tmp_path, capsys):
    _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--set", "gan=5"], "--set gan=5: 'gan' is the generator's section",
         capsys, tmp_path)  # fmt: skip
    _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--set", "run..seed=5"], "'run..seed' has an empty key name",
         capsys, tmp_path)  # fmt: skip


def test_report_of_a_run_id_that_does_not_exist(tmp_path, capsys):
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db").create_experiment("syncgan_ratio")
    _row(["report", "--experiment", "syncgan_ratio", "--run-id", "deadbeef", "--out", str(tmp_path / "r"),
          "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], "--run-id deadbeef: no such run", capsys, tmp_path)  # fmt: skip


@pytest.mark.parametrize("argv,fragment", [
    (["simulate", "--out", "{tmp}/s", "--n", "4", "--size", "100000"], "--n 4 --size 100000 needs about"),
    (["fid", "{ds}/benign", "{ds}/malignant", "--size", "100000"], "--size 100000: give 16 to 2048 px"),
])  # fmt: skip
def test_absurd_sizes_are_refused_before_allocating(argv, fragment, ds, tmp_path, capsys):
    _row([a.format(tmp=tmp_path, ds=ds) for a in argv], fragment, capsys, tmp_path)


def test_generate_more_images_than_memory_holds(tmp_path):
    from cytoray.cli import _write_samples
    from cytoray.errors import CytorayError

    with pytest.raises(CytorayError, match=r"--n 100000000 needs about .* GiB of memory"):
        _write_samples(FakeGen(), 100_000_000, ["benign"], str(tmp_path / "g"), 0)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    """ENOSPC from a write has no file name (OSError 28 was a traceback)."""
    import errno

    import cytoray.data.simulate as sim

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sim, "save_png", full)
    _row(["simulate", "--out", str(tmp_path / "s"), "--n", "4", "--size", "16"], "no space left on the device", capsys, tmp_path)


def test_an_unreadable_input_is_not_told_to_choose_another_output(ds, tmp_path, capsys):
    from cytoray.io import os_error_message

    msg = os_error_message(PermissionError(13, "Permission denied", str(ds / "benign" / "00.png")))
    assert "choose another output" not in msg and "inputs must be readable" in msg


def test_a_legal_250_character_name_is_written(tmp_path):
    from cytoray.io import atomic_dir, write_text

    name = "n" * 250
    write_text(tmp_path / f"{name[:246]}.txt", "x")
    with atomic_dir(tmp_path / name) as d:
        (d / "f").write_text("y")
    with atomic_dir(tmp_path / name, overwrite=True) as d:
        (d / "g").write_text("z")
    assert (tmp_path / name / "g").read_text() == "z" and sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"{name[:246]}.txt"])


# ----------------------------------------------------------------------------- 4c. configs and search spaces before Ray


@pytest.mark.parametrize("dist,fragment", [
    ("{dist: uniform, low: a, high: 1}", "space.ratio.low: 'a' is not a finite number"),
    ("{dist: choice, values: []}", "space.ratio.values: give a non-empty list"),
    ("{dist: uniform, low: 0, high: .inf}", "space.ratio.high: inf is not a finite number"),
    ("{dist: choice, values: [1, .nan]}", "space.ratio=nan"),
])  # fmt: skip
def test_search_space_that_failed_inside_ray(dist, fragment, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text(f"space:\n  ratio: {dist}\n")
    code, err = _study("syncgan_ratio", ["--smoke-test", "--out", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                                         "--set", f"tune.search_space={space}"], capsys)  # fmt: skip
    assert code == 2 and f"{space}: {fragment}" in err, err
    _one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


@pytest.mark.parametrize("argv,fragment", [
    (["--set", "gan.lr_g=1e300"], "lr_g=1e+300: a learning rate is above 0"),
    (["--set", "run.storage_path=/proc/cytoray-x"], "run.storage_path=/proc/cytoray-x: cannot write in /proc"),
])  # fmt: skip
def test_train_settings_that_failed_late(argv, fragment, ds, tmp_path, capsys):
    _row(["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), *argv], fragment, capsys, tmp_path)


def test_a_class_name_mlflow_refuses_is_named_before_training(tmp_path, capsys):
    root = tmp_path / "d"
    for c, cls in enumerate(("a b \U0001f600", "malin")):
        for i in range(6):
            write_png(root / cls / f"{i}.png", blob_image(10 * c + i))
    _row(["train", "gan", "--data", str(root), "--out", str(tmp_path / "o")], "class name 'a b \U0001f600' cannot be an MLflow metric name",
         capsys, tmp_path)  # fmt: skip


# ----------------------------------------------------------------------------- 5. silently wrong


def test_validate_names_masks_of_the_wrong_size_and_notes_jpeg_and_grey_masks(ds, tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from cytoray.cli import main

    write_png(ds / "benign" / "masks" / "01.png", np.zeros((10, 12), np.uint8))  # its image is 32x32
    Image.fromarray((blob_image(5)[..., 0] < 128).astype(np.uint8) * 255).save(ds / "benign" / "masks" / "02.jpg", quality=60)
    write_png(ds / "malignant" / "masks" / "01.png", blob_image(7)[..., 1])  # a greyscale picture, not a mask
    assert main(["validate", str(ds), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    problems = {p["file"]: p["problem"] for p in rep["problems"]}
    assert problems[str(ds / "benign" / "masks" / "01.png")].startswith("mask is 12x10 px but its image is 32x32"), problems
    notes = {n["file"]: n["note"] for n in rep["mask_notes"]}
    assert notes[str(ds / "benign" / "masks" / "02.jpg")].startswith("a JPEG mask"), notes
    assert notes[str(ds / "malignant" / "masks" / "01.png")].startswith("grey levels"), notes
    assert str(ds / "benign" / "masks" / "00.png") not in notes  # a binary PNG mask is fine


def test_unknown_or_absurd_network_arguments_in_a_bundle(tmp_path):
    from cytoray.errors import CytorayError
    from cytoray.generators.bundle import load_per_class
    from cytoray.nets.patchgan import PatchDiscriminator

    for kwargs, frag in (({"nope": 1}, "do not build"), ({"base": 10**9}, "not a plausible network"), ("x", "not a plausible network")):
        with pytest.raises(CytorayError, match=frag):
            load_per_class(tmp_path, {"benign": {"kwargs": kwargs}}, PatchDiscriminator, "d_")


def _untrained_segmenter(out: Path) -> Path:
    """A segmenter bundle `cytoray segment` loads (untrained: these rows never get to its masks)."""
    from cytoray.generators.refined_sim import write_segmenter_bundle
    from cytoray.nets import UNet

    kw = dict(in_ch=3, out_ch=1, base=4, depth=2, norm="batch", dropout=0.0, out_act="none")
    return write_segmenter_bundle(out, UNet(**kw).state_dict(), kw, 0.5, 1.0, {"trained_on": "nothing (test)"})


def test_segment_stopped_by_a_decompression_bomb_writes_no_mask(ds, tmp_path, capsys):
    seg = _untrained_segmenter(tmp_path / "seg")
    bomb = _bomb_png(ds / "malignant" / "zz.png")  # after the benign images: those were segmented first
    err = _row(["segment", str(seg), str(ds), "--out", str(tmp_path / "masks")], f"{bomb}: {LIMIT_TEXT}", capsys, tmp_path)
    assert "CYTORAY_MAX_IMAGE_PIXELS" in err


def test_segment_overwrite_replaces_its_own_output_only(ds, tmp_path, capsys):
    from cytoray.cli import main

    seg = _untrained_segmenter(tmp_path / "seg")
    out = tmp_path / "masks"
    assert main(["segment", str(seg), str(ds / "benign"), "--out", str(out)]) == 0
    assert (out / "segment.json").is_file() and len(list(out.glob("*.png"))) == 6
    assert main(["segment", str(seg), str(ds / "benign"), "--out", str(out)]) == 2  # not without --overwrite
    assert main(["segment", str(seg), str(ds / "malignant"), "--out", str(out), "--overwrite"]) == 0
    assert str(ds / "malignant") in (out / "segment.json").read_text()


def test_fid_names_a_dangling_symlink_instead_of_skipping_it(ds, tmp_path, capsys):
    link = ds / "benign" / "zz.png"
    os.symlink(tmp_path / "gone.png", link)
    _row(["fid", str(ds / "benign"), str(ds / "malignant")], f"{link}: a symbolic link to nothing", capsys, tmp_path)


@pytest.mark.parametrize("metric", ["test_balanced_accuracy", "balanced_accuracy"])
def test_a_selection_metric_that_is_not_validation_is_refused_before_the_split(metric, tmp_path, capsys):
    code, err = _study("syncgan_ratio", ["--smoke-test", "--out", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                                         "--set", f"tune.metric={metric}"], capsys)  # fmt: skip
    assert code == 2 and f"tune.metric={metric}: select on a validation metric" in err, err
    _one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_kid_at_n_2_shows_no_spread_instead_of_plus_minus_zero():
    from cytoray.metrics.fidelity_stats import describe

    r = {"n1": 2, "n2": 2, "kid_mean": -0.0308, "kid_std": 0.0, "kid_subset_size": 2, "kid_subsets": 100, "fid": 12.0,
         "feature_extractor": "inception", "weights_sha1": "0" * 40, "resize": "none"}  # fmt: skip
    text = "\n".join(describe(r))
    assert "± 0.0000" not in text and "± n/a (every subset is the whole set" in text
    text = "\n".join(describe({**r, "n1": 3, "kid_std": 0.01}))  # the larger set varies between subsets
    assert "± 0.01000" in text
