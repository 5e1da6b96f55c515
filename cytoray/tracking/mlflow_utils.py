"""Thin MLflow helpers. One writer per process: the driver logs, trainers only report."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_URI = "sqlite:///mlflow.db"  # the registry needs a database store; sqlite by default


def tracking_uri(uri: str | None = None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def artifact_root(uri: str) -> str | None:
    """Where a sqlite store's artefacts go: `mlartifacts/` beside the database file, never the
    caller's working directory (MLflow's default `./mlruns`). A server keeps its own store (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):]).expanduser()
    return (db.resolve().parent / "mlartifacts").as_uri()


def setup(experiment: str, uri: str | None = None) -> str:
    """Point MLflow at `uri` (flag > MLFLOW_TRACKING_URI > sqlite:///mlflow.db) and an experiment
    (created with its artefacts beside a sqlite database)."""
    import logging
    import re

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)  # sqlite schema migration chatter
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per download is noise in logs
    u = tracking_uri(uri)
    mlflow.set_tracking_uri(u)
    root = artifact_root(u)
    if root is not None and mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=f"{root}/{re.sub(r'[^A-Za-z0-9._-]+', '_', experiment)}")
    mlflow.set_experiment(experiment)
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

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    import mlflow

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
