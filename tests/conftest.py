"""Shared fixtures: small real data on CPU, one thread per process (CI has 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


def run_python(
    args: list[str], cwd: Path, env: dict | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    """`python ARGS` in a fresh process (unbuffered, output captured): the end-to-end studies and CLI."""
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout
    )


def write_png(path: Path, arr: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(
        path
    )  # mode follows the dtype/shape (uint16 → I;16, 4 channels → RGBA)
    return path


def blob_image(seed: int, size: int = 32, dark: bool = True) -> np.ndarray:
    """A distinct RGB image: random coloured ellipses on a pale background."""
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 230, np.uint8)
    img[..., 2] = 240
    for _ in range(rng.integers(3, 7)):
        rr, cc = ellipse(
            rng.uniform(4, size - 4),
            rng.uniform(4, size - 4),
            rng.uniform(2, 6),
            rng.uniform(2, 6),
            shape=img.shape[:2],
        )
        img[rr, cc] = rng.integers(20, 120, 3) if dark else rng.integers(150, 255, 3)
    img[rng.integers(0, size), :] = rng.integers(0, 255, 3)  # a random stripe keeps images apart
    return img


_SESSION_ENV = dict(os.environ)  # the environment every test starts from


@pytest.fixture(autouse=True)
def _isolated_environment():
    """After each test, the session's environment again: `mlflow.set_tracking_uri` (called by every
    in-process study, CLI command or store-writing fixture) exports MLFLOW_TRACKING_URI, which would
    otherwise point the subprocesses of later tests (and later modules' fixtures) at an earlier
    test's store, or at an unreachable test server."""
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(
            ""
        )  # this process back to MLflow's default (it exports the variable too)
    current = os.environ.get(
        "PYTEST_CURRENT_TEST"
    )  # pytest's own, removed by pytest after teardown
    os.environ.clear()
    os.environ.update(_SESSION_ENV)
    if current is not None:
        os.environ["PYTEST_CURRENT_TEST"] = current


@pytest.fixture(scope="module")
def single_ray_instance():
    """Studies start their own local Ray cluster in a subprocess. Ray Train's placement-group
    cleaner finds its cluster by address auto-detection, which fails when two local clusters
    exist, so the in-process cluster of earlier tests is shut down first."""
    import ray

    ray.shutdown()
    yield


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """A real PostgreSQL + `mlflow server --app-name basic-auth` on 127.0.0.1, shared by the
    session (a start costs ~15 s on 2 cores). Yields servers.TrackingStack: `.uri`,
    `.client_env()` (URI + a non-admin user's credentials), `.mlflow.stop()/.start()` (same
    port and stores). If it cannot start, the test errors with the server's log: never a skip."""
    from servers import tracking_stack

    with tracking_stack(tmp_path_factory.mktemp("tracking-server")) as stack:
        yield stack


def two_class_folder(root: Path, n: int, name: str = "{i:02d}.png") -> Path:
    """<root>/{benign,malignant}/<name>, n distinct images per class (blob_image seeds 100*c + i)."""
    for c, cls in enumerate(("benign", "malignant")):
        for i in range(n):
            write_png(root / cls / name.format(cls=cls, i=i), blob_image(100 * c + i))
    return root


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    """<root>/{benign,malignant}/*.png, 10 images per class, distinct content."""
    return two_class_folder(tmp_path / "ds", 10, "{cls}_{i:02d}.png")
