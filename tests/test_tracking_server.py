"""cytoray against a real tracking server: PostgreSQL + `mlflow server --app-name basic-auth` with
artefacts proxied through the server, all on 127.0.0.1 (tests/servers.py, `tracking_server`
fixture in conftest.py). Clients get their identity only from MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD, as a study on a cluster does.

In `make test`; skip only explicitly with `-m "not server"`. A server that cannot start fails
the tests with its log (no silent skip)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def as_study_user(tracking_server, monkeypatch):
    """This process talks to the server as the non-admin study user, credentials from the environment."""
    import mlflow

    for k in [k for k in os.environ if k.startswith("MLFLOW_TRACKING_")]:
        monkeypatch.delenv(k)
    for k, v in tracking_server.client_env().items():
        monkeypatch.setenv(k, v)
    # A test that breaks the server fails in seconds, not after MLflow's default ~4 min of retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    mlflow.set_tracking_uri(tracking_server.uri)
    yield tracking_server
    mlflow.set_tracking_uri(None)  # back to the environment (monkeypatch restores it next)


def new_experiment(prefix: str) -> str:
    import mlflow

    return mlflow.set_experiment(f"{prefix}-{uuid.uuid4().hex[:8]}").experiment_id


def listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                found.append(local.rsplit(":", 1)[0])
    return found


# ----------------------------------------------------------------------------- the stack itself


def test_stack_starts_in_bounded_time_and_listens_on_loopback_only(tracking_server):
    # Two imports of MLflow (CLI + uvicorn worker, ~6 s each on 2 cores) are the floor; 41 s
    # was measured with MLflow's job runner left on, which this bound catches.
    assert tracking_server.start_s < 45, f"stack took {tracking_server.start_s:.1f} s to answer"
    for name, port in (
        ("mlflow", tracking_server.mlflow.port),
        ("postgres", tracking_server.postgres.port),
    ):
        assert listeners(port) == ["0100007F"], (
            f"{name} on port {port} listens on {listeners(port)}, not only 127.0.0.1"
        )


def test_no_secret_on_a_server_command_line(tracking_server):
    from servers import family

    secrets = {
        "database": tracking_server.postgres.password,
        "admin": tracking_server.mlflow.admin.password,
    }
    procs = family(tracking_server.mlflow.proc.pid) | family(tracking_server.postgres.proc.pid)
    assert len(procs) >= 2
    for pid in procs:  # anyone on the host can read these (ps)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        leaked = [name for name, value in secrets.items() if value in cmdline]
        assert not leaked, f"the {leaked} password is on the command line of pid {pid}"


# ----------------------------------------------------------------------------- (a) runs, metrics, proxied artefacts


def test_authenticated_run_with_params_metrics_and_proxied_artifact(as_study_user, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    srv = as_study_user
    exp = new_experiment("a")
    note = tmp_path / "note.txt"
    note.write_text("proxied through the tracking server\n")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_params({"classifier": "smallcnn", "lr": "0.001"})
        for step, loss in enumerate([0.9, 0.7, 0.5]):
            mlflow.log_metric("loss", loss, step=step)
        mlflow.log_artifact(str(note), artifact_path="notes")
    rid, client = run.info.run_id, MlflowClient()

    got = client.get_run(rid)
    assert (
        got.data.params == {"classifier": "smallcnn", "lr": "0.001"}
        and got.info.status == "FINISHED"
    )
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "loss")] == [
        (0, 0.9),
        (1, 0.7),
        (2, 0.5),
    ]
    # Proxied: the client sees only mlflow-artifacts:/ URIs and never a store credential.
    assert got.info.artifact_uri.startswith("mlflow-artifacts:"), got.info.artifact_uri
    back = mlflow.artifacts.download_artifacts(
        run_id=rid, artifact_path="notes/note.txt", dst_path=str(tmp_path / "dl")
    )
    assert Path(back).read_text() == note.read_text()

    # The server wrote the file under --artifacts-destination and the run into PostgreSQL.
    stored = [p for p in srv.mlflow.artifacts.rglob("note.txt") if rid in p.parts]
    assert len(stored) == 1, (
        f"artefact not under {srv.mlflow.artifacts}: {list(srv.mlflow.artifacts.rglob('*'))[:20]}"
    )
    with closing(srv.postgres.connect("mlflow")) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (rid,))
        assert cur.fetchall() == [("FINISHED",)]
        cur.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s AND key = 'loss'", (rid,))
        assert cur.fetchone() == (3,)


# ----------------------------------------------------------------------------- (b) no credentials, no access


def test_unauthenticated_requests_are_refused(tracking_server, monkeypatch):
    import requests
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri, user = tracking_server.uri, tracking_server.user
    search = f"{uri}/api/2.0/mlflow/experiments/search"
    for what, auth in (
        ("no credentials", None),
        ("a wrong password", (user.username, "wrong-" + user.password)),
    ):
        r = requests.get(search, params={"max_results": 5}, auth=auth, timeout=10)
        assert r.status_code == 401, f"{what}: HTTP {r.status_code} {r.text[:200]}"
        assert r.headers.get("WWW-Authenticate", "").startswith("Basic"), r.headers
    r = requests.get(
        f"{uri}/api/2.0/mlflow-artifacts/artifacts", timeout=10
    )  # the artefact proxy too
    assert r.status_code == 401, f"artifact proxy: HTTP {r.status_code}"
    # The same request with the user's credentials passes: the 401s are about credentials.
    assert (
        requests.get(
            search, params={"max_results": 5}, auth=(user.username, user.password), timeout=10
        ).status_code
        == 200
    )

    for k in [k for k in os.environ if k.startswith("MLFLOW_TRACKING_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as e:
        MlflowClient(tracking_uri=uri).search_experiments()
    assert "401" in str(e.value), str(e.value)[:500]


def test_default_permission_hides_other_users_experiments(as_study_user):
    import requests
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    srv = as_study_user
    admin = (srv.mlflow.admin.username, srv.mlflow.admin.password)
    r = requests.post(
        f"{srv.uri}/api/2.0/mlflow/experiments/create",
        json={"name": f"admin-only-{uuid.uuid4().hex[:8]}"},
        auth=admin,
        timeout=10,
    )
    assert r.status_code == 200, r.text[:300]
    with pytest.raises(MlflowException) as e:
        MlflowClient().get_experiment(r.json()["experiment_id"])
    assert "403" in str(e.value) or "PERMISSION_DENIED" in str(e.value), str(e.value)[:500]


# ----------------------------------------------------------------------------- (c) registry through the server


PULL = """
import json, sys, tempfile
import numpy as np
from cytoray.classify.bundle import load_classifier_bundle, predict_images
from cytoray.tracking.registry import pull

with tempfile.TemporaryDirectory() as tmp:  # a pull goes into a folder the caller owns
    model, meta = load_classifier_bundle(pull(sys.argv[1], tmp))
proba = predict_images(model, meta, np.load(sys.argv[2]))
print(json.dumps({"classifier": meta["classifier"], "proba": proba.tolist()}))
"""


def fresh_python(code: str, args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """`python -c code` with no MLflow setting inherited from this process: only `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_register_then_pull_in_a_fresh_process(as_study_user, tmp_path, monkeypatch):
    import mlflow
    import torch
    from mlflow import MlflowClient

    from cytoray.classify.bundle import (
        load_classifier_bundle,
        predict_images,
        write_classifier_bundle,
    )
    from cytoray.errors import CytorayError
    from cytoray.nets.classifiers import build_classifier
    from cytoray.tracking.registry import CHAMPION, pull, register

    srv, name = as_study_user, f"smallcnn-{uuid.uuid4().hex[:8]}"
    torch.manual_seed(0)
    bundle = write_classifier_bundle(
        tmp_path / "bundle",
        build_classifier("smallcnn", 2, 32).state_dict(),
        name="smallcnn",
        class_names=["benign", "malignant"],
        input_size=32,
        params={"seed": 0},
    )
    with mlflow.start_run(experiment_id=new_experiment("c")):
        version, promoted = register(
            name,
            bundle,
            score=0.8,
            protocol="test-split",
            metric="val_balanced_accuracy",
            kind="classifier",
        )
    assert (version, promoted) == ("1", True)
    client = MlflowClient()
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == [
        "1"
    ]  # nothing duplicated
    assert client.get_model_version_by_alias(name, CHAMPION).version == "1"

    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    r = fresh_python(
        PULL, [f"{name}@{CHAMPION}", str(tmp_path / "x.npy")], srv.client_env(), tmp_path
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    model, meta = load_classifier_bundle(bundle)
    assert out["classifier"] == "smallcnn"
    np.testing.assert_allclose(
        out["proba"], predict_images(model, meta, images), atol=1e-6
    )  # the same weights came back

    # The same pull without credentials is refused by the server (MLflow reads them per request).
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(CytorayError) as e:
        pull(f"{name}@{CHAMPION}", tmp_path / "anon")
    assert "401" in str(e.value), str(e.value)


# ----------------------------------------------------------------------------- (d) server stopped and restarted


def test_server_stop_fails_fast_then_restart_keeps_everything(as_study_user, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from servers import family

    srv = as_study_user
    exp = new_experiment("d")
    (tmp_path / "a.txt").write_text("kept across a restart\n")
    rids = []
    for i in range(2):
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_param("i", i)
            mlflow.log_metrics({"acc": 0.5 + i / 10}, step=0)
            mlflow.log_artifact(str(tmp_path / "a.txt"))
        rids.append(run.info.run_id)
    client = MlflowClient()
    client.create_registered_model(f"m-{exp}")
    client.create_model_version(f"m-{exp}", f"runs:/{rids[0]}", run_id=rids[0])

    old = srv.mlflow.proc.pid
    srv.mlflow.stop()
    assert not family(old), f"processes of the stopped server still running: {family(old)}"

    # With retries off, a call fails within the timeout and names the address it could not reach.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    t0 = time.monotonic()
    with pytest.raises(MlflowException) as e:
        client.get_run(rids[0])
    took, msg = time.monotonic() - t0, str(e.value)
    assert took < 10, f"a call to a stopped server took {took:.1f} s"
    assert f"127.0.0.1:{srv.mlflow.port}" in msg or f"port={srv.mlflow.port}" in msg, msg[:500]

    restart_s = srv.mlflow.start()  # same port, same PostgreSQL stores, same artefact folder
    assert restart_s < 45, f"restart took {restart_s:.1f} s"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    runs = client.search_runs([exp])  # the client made before the stop, unchanged
    assert sorted(r.info.run_id for r in runs) == sorted(rids)
    assert {r.data.params["i"]: r.data.metrics["acc"] for r in runs} == {"0": 0.5, "1": 0.6}
    for rid in rids:
        assert [f.path for f in client.list_artifacts(rid)] == ["a.txt"]
    assert [v.version for v in client.search_model_versions(f"name = 'm-{exp}'")] == ["1"]
