"""Thin MLflow helpers. One writer per process: the driver logs, trainers only report."""

from __future__ import annotations

import os
from pathlib import Path

from .. import process_env

DEFAULT_URI = "sqlite:///mlflow.db"  # the registry needs a database store; sqlite by default


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def store_uri(uri: str) -> str:
    """The URI cytoray connects with: a sqlite store waits up to 30 s for a lock (concurrent
    writers such as a `cytoray train` beside a study) instead of failing with 'database is locked'."""
    if uri.startswith("sqlite:") and "timeout=" not in uri:
        return f"{uri}{'&' if '?' in uri else '?'}timeout=30"
    return uri


# ----------------------------------------------------------------------------- an unreachable server

# MLflow's own HTTP retries default to 7 with backoff 2 (~250 s of silence per call, even on a
# refused connection). Each call retries briefly itself (process_env.py: mlflow_http);
# `tracking_call` does the long, visible, bounded waiting, so a restarted server loses nothing
# and a dead one is named within minutes.

# how long a study waits for its server
MAX_WAIT_S = float(os.environ.get("CYTORAY_TRACKING_MAX_WAIT_S", "300"))


def configure_http() -> None:
    process_env.ensure("mlflow_http")


def failure_kind(e: BaseException) -> str | None:
    """'unreachable' | 'unauthenticated' | 'forbidden' | 'not found' for a tracking error, else None."""
    text = f"{type(e).__name__}: {e}"
    code = getattr(e, "error_code", "") or ""
    if "RESOURCE_DOES_NOT_EXIST" in code or "RESOURCE_DOES_NOT_EXIST" in text:
        return "not found"
    if "UNAUTHENTICATED" in code or " 401" in text or "Unauthorized" in text:
        return "unauthenticated"
    if "PERMISSION_DENIED" in code or " 403" in text:
        return "forbidden"
    if any(
        s in text
        for s in (
            "NewConnectionError",
            "Connection refused",
            "ConnectionError",
            "Max retries exceeded",
            "Read timed out",
            "ConnectTimeout",
            " 502",
            " 503",
            " 504",
        )
    ):
        return "unreachable"
    return None


def tracking_error(e: BaseException, uri: str, what: str, resume: bool = False):
    """A one-line CytorayError for a tracking failure the user can act on (or None). `resume`: the
    caller is a study, whose --resume keeps finished trials (pull, classify, train have no --resume)."""
    from ..errors import CytorayError

    kind = failure_kind(e)
    if kind == "unreachable":
        return CytorayError(
            f"cannot reach the MLflow tracking server at {uri} "
            f"while {what}; start it (or check --tracking-uri), "
            "then rerun" + (" with --resume, which keeps its finished trials" if resume else "")
        )
    if kind == "unauthenticated":
        return CytorayError(
            f"not authenticated (401) at {uri} while {what}: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    if kind == "forbidden":
        return CytorayError(
            f"no permission (403) at {uri} while {what} (or no "
            "such model for this user); ask the server's admin"
        )
    return None


def tracking_call(
    fn, what: str, uri: str | None = None, max_wait_s: float | None = None, resume: bool = False
):
    """`fn()`, retried with capped backoff while the tracking server is unreachable (a WARNING per
    attempt), for at most `max_wait_s`; then a one-line error naming the server and what was lost."""
    import sys
    import time

    uri = uri or tracking_uri()
    limit = MAX_WAIT_S if max_wait_s is None else max_wait_s
    t0, delay = time.monotonic(), 2.0
    while True:
        try:
            return fn()
        except Exception as e:  # MLflow wraps transport errors in MlflowException
            if failure_kind(e) != "unreachable":
                if (
                    full := store_full_error(e, uri)
                ) is not None:  # sqlite's 'database or disk is full'
                    raise full from None
                raise
            waited = time.monotonic() - t0
            if waited + delay > limit:
                raise tracking_error(e, uri, what, resume) from None
            print(
                f"WARNING: MLflow server at {uri} unreachable while "
                f"{what}; retrying for up to {limit - waited:.0f} s more",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def store_full_error(e: BaseException, uri: str):
    """A one-line CytorayError naming the store when `e` is a full disk under it (SQLAlchemy's
    OperationalError 'database or disk is full' was a 100-line traceback), else None."""
    from ..errors import CytorayError
    from ..io import full_disk_message

    if full_disk_message(e) is None:
        return None
    where = (
        Path(uri[len("sqlite:///") :].split("?")[0]).expanduser()
        if uri.startswith("sqlite:///")
        else uri
    )
    return CytorayError(
        f"{where}: the MLflow store's disk is full (or over quota); "
        "free space there or pass a --tracking-uri on another disk"
    )


class RetryingClient:
    """An MlflowClient whose every call rides out an unreachable server (`tracking_call`): the
    study's one writer keeps every trial's run and metrics through a server restart. Metric
    batches re-sent after a lost answer are de-duplicated by the store."""

    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        configure_http()
        self._uri, self._client = uri, MlflowClient(tracking_uri=store_uri(uri))

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        # a study's
        return lambda *a, **kw: tracking_call(
            lambda: attr(*a, **kw), f"calling {name}", self._uri, resume=True
        )


def check_store(uri: str) -> None:
    """A sqlite store must exist to be read (MLflow would create an empty database and say 'not found')."""
    from ..errors import CytorayError

    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :].split("?")[0]).expanduser()
        if not db.is_file():
            raise CytorayError(
                f"{db}: no MLflow store there; pass the --tracking-uri "
                "a study wrote to (e.g. sqlite:///runs/mlflow.db)"
            )


def artifact_root(uri: str) -> str | None:
    """Where a sqlite store's artefacts go: `mlartifacts/` beside the database file, never the
    caller's working directory (MLflow's default `./mlruns`). A server keeps its own store (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :].split("?")[0]).expanduser()
    return (db.resolve().parent / "mlartifacts").as_uri()


def setup(experiment: str, uri: str | None = None) -> str:
    """Point MLflow at `uri` (flag > MLFLOW_TRACKING_URI > sqlite:///mlflow.db) and an experiment
    (created with its artefacts beside a sqlite database)."""
    import logging
    import re

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)  # sqlite schema migration chatter
    process_env.ensure("mlflow")  # no progress bar per download
    configure_http()
    u = tracking_uri(uri)
    mlflow.set_tracking_uri(store_uri(u))
    root = artifact_root(u)

    def _experiment() -> None:
        if root is not None and mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(
                experiment,
                artifact_location=f"{root}/{re.sub(r'[^A-Za-z0-9._-]+', '_', experiment)}",
            )
        mlflow.set_experiment(experiment)

    db = (
        Path(u[len("sqlite:///") :].split("?")[0]).expanduser()
        if u.startswith("sqlite:///")
        else None
    )
    new_db = db is not None and not db.exists()
    try:  # before any work: an unreachable server or bad credentials stop here, with the address
        tracking_call(_experiment, f"opening experiment {experiment!r}", u, max_wait_s=20)
    except Exception as e:
        err = tracking_error(e, u, f"opening experiment {experiment!r}") or store_full_error(e, u)
        if err is None:
            raise
        if (
            new_db and db.exists() and "disk is full" in str(err)
        ):  # a schema cut off mid-migration is no store
            db.unlink()
        raise err from None
    return u


def log_params_flat(params: dict) -> None:
    import mlflow

    from ..config import flatten

    flat = {k: ("None" if v is None else str(v))[:500] for k, v in flatten(params).items()}
    items = list(flat.items())
    for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
        mlflow.log_params(dict(items[i : i + 100]))


def log_history(prefix: str, history: list[dict]) -> None:
    """Per-epoch metrics of a stage as `<prefix>/<metric>` with step = epoch."""
    import time

    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    run = mlflow.active_run()
    ts = int(time.time() * 1000)
    metrics = [
        Metric(f"{prefix}/{k}", float(v), ts, int(row["epoch"]))
        for row in history
        for k, v in row.items()
        if k != "epoch" and isinstance(v, (int, float))
    ]
    client = MlflowClient()
    for i in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[i : i + 1000])


def log_files(paths: list[Path], artifact_path: str) -> None:
    import mlflow

    for p in paths:
        mlflow.log_artifact(str(p), artifact_path=artifact_path)
