"""The bad-input table (issue 21), part 2 of 3: hangs and slow failures. Each row runs under a
time limit (SIGALRM in process, or a subprocess timeout) and asserts exit 2, one line naming the
file, key or address, and nothing written. Every server is one this test opens on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_bad_input import _one_line, _study  # noqa: E402
from test_bad_input_more import _row, _run_limited, ds, time_limit  # noqa: E402,F401 (ds: the fixture)


@pytest.mark.parametrize("split", ["nan:1:1", "inf:1:1", "1e308:1:1"])
def test_validate_split_that_would_loop_forever_answers(split, ds, tmp_path, capsys):
    with time_limit(60):
        _row(
            ["validate", str(ds), "--split", split],
            f"--split {split}: give three",
            capsys,
            tmp_path,
        )


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_answers_in_a_config_and_in_set(ds, tmp_path, capsys):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_bomb())
    flow = "{" + _bomb().replace("\n", ", ").rstrip(", ") + "}"
    with time_limit(60):
        _row(
            ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--config", str(cfg)],
            f"{cfg}: expands to more than",
            capsys,
            tmp_path,
        )
        err = _row(
            [
                "train",
                "gan",
                "--data",
                str(ds),
                "--out",
                str(tmp_path / "o"),
                "--set",
                f"gan.extra={flow}",
            ],
            "extra': expands to more than",
            capsys,
            tmp_path,
        )
    assert len(err) < 1000  # one short line, not the 157 MB expansion


def test_a_50_mb_yaml_is_refused_unread(ds, tmp_path, capsys):
    cfg = tmp_path / "big.yaml"
    with open(cfg, "wb") as f:
        f.truncate(50 << 20)  # sparse: 50 MB on paper
    _row(
        ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--config", str(cfg)],
        f"{cfg}: 52428800 bytes, over",
        capsys,
        tmp_path,
    )


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
    return {
        "pull": ["pull", "gen@champion", "--n", "1", "--out", str(tmp_path / "p")],
        "classify": ["classify", "clf@champion", str(ds / "benign")],
        "report": ["report", "--experiment", "syncgan_ratio", "--out", str(tmp_path / "r")],
        "segment": ["segment", "seg@champion", str(ds / "benign"), "--out", str(tmp_path / "s")],
    }[cmd] + ["--tracking-uri", uri]


@pytest.mark.parametrize("cmd", ["pull", "classify", "report", "segment"])
def test_a_tracking_server_that_is_down_is_named_in_seconds(cmd, closed_port, ds, tmp_path, capsys):
    uri = f"http://127.0.0.1:{closed_port}"
    with time_limit(60):  # MLflow's own retries took 250 s and more
        err = _row(
            _tracking_argv(cmd, uri, tmp_path, ds),
            f"cannot reach the MLflow tracking server at {uri}",
            capsys,
            tmp_path,
        )
    assert "--resume" not in err


def test_a_tracking_server_that_never_answers_is_named_in_seconds(silent_port, ds, tmp_path):
    uri = f"http://127.0.0.1:{silent_port}"
    r = _run_limited(_tracking_argv("pull", uri, tmp_path, ds), tmp_path, limit=30)
    assert (
        r.returncode == 2
        and f"cannot reach the MLflow tracking server at {uri} (timed out)" in r.stderr
    ), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize("cmd", ["pull", "report"])
def test_a_web_server_that_is_not_mlflow_is_not_an_empty_registry(
    cmd, html_404_port, ds, tmp_path, capsys
):
    uri = f"http://127.0.0.1:{html_404_port}"
    err = _row(_tracking_argv(cmd, uri, tmp_path, ds), f"{uri} (while ", capsys, tmp_path)
    assert "not an MLflow tracking server (HTTP 404 on /health)" in err, err


@pytest.mark.parametrize("kind", ["silent", "http", "ray-client"])
def test_a_ray_address_that_is_not_a_ray_head_is_refused_in_seconds(
    kind, silent_port, html_404_port, closed_port, tmp_path, capsys
):
    """--address (and RAY_ADDRESS) to an open port that is not Ray: named before the split or MLflow run."""
    address = {
        "silent": f"127.0.0.1:{silent_port}",
        "http": f"127.0.0.1:{html_404_port}",
        "ray-client": f"ray://127.0.0.1:{closed_port}",
    }[kind]
    frag = {
        "silent": "does not answer as a Ray head",
        "http": "it is not a Ray head",
        "ray-client": "no Ray cluster answers at",
    }[kind]
    for argv, env in (([f"--address={address}"], None), ([], address)):
        if env:
            os.environ["RAY_ADDRESS"] = env  # the conftest fixture restores the environment
        with time_limit(60):  # ray.init waited minutes, ignoring Ctrl-C
            code, err = _study(
                "syncgan_ratio",
                [
                    "--smoke-test",
                    "--out",
                    str(tmp_path / "o"),
                    "--tracking-uri",
                    f"sqlite:///{tmp_path}/m.db",
                    *argv,
                ],
                capsys,
            )
        assert code == 2 and address in err and frag in err, err
        _one_line(err)
        assert not (tmp_path / "o").exists() and not (tmp_path / "m.db").exists()


def test_train_more_workers_than_cpus_is_refused_before_the_job(ds, tmp_path, capsys):
    _row(
        ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--workers", "1000"],
        "run.num_workers=1000",
        capsys,
        tmp_path,
    )


def test_train_gpu_on_a_machine_without_one(ds, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _row(
        ["train", "gan", "--data", str(ds), "--out", str(tmp_path / "o"), "--gpu"],
        "--gpu: 1 worker(s)",
        capsys,
        tmp_path,
    )


def _listening(pids: set[int]) -> list[str]:
    """Local addresses of TCP sockets in LISTEN held by `pids` (from `ss`, which names the owner)."""
    import subprocess

    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if any(f"pid={p}," in line for p in pids)]


@pytest.mark.usefixtures("single_ray_instance")
def test_a_local_study_cluster_listens_on_loopback_only():
    """The local head (GCS, raylet, dashboard and its agent, runtime-env agent, metrics, workers):
    every listening socket on 127.0.0.1, none on 0.0.0.0 or the machine's address."""
    import shutil
    import time

    import psutil
    import ray

    from cytoray.training.runner import init_ray

    if shutil.which("ss") is None:
        pytest.skip("needs `ss` (iproute2) to name the owner of each socket")
    init_ray(num_cpus=1)
    try:
        time.sleep(3)  # the agents open their ports after ray.init returns
        me = psutil.Process()
        pids = {me.pid} | {c.pid for c in me.children(recursive=True)}
        node = ray._private.worker._global_node
        for p in psutil.process_iter(["pid", "cmdline"]):
            if node.session_name in " ".join(p.info["cmdline"] or []):
                pids |= {p.pid} | {c.pid for c in p.children(recursive=True)}
        addrs = _listening(pids)
        assert len(addrs) >= 4, addrs  # GCS, raylet, dashboard, agents
        assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for a in addrs), addrs
        assert node.node_ip_address == "127.0.0.1"
    finally:
        ray.shutdown()
