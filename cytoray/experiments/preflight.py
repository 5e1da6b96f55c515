"""Checks before Ray starts: is the Ray address a Ray head, can the cluster place the job.

`ray.init` on an address where something else listens waits for minutes and ignores Ctrl-C;
a job asking for more CPUs or GPUs than a local cluster has waits forever for its placement
group (Ray's autoscaler warnings, retries, the MLflow run left RUNNING). Both are refused here
in seconds, before a split, a cache or an MLflow run is written.
"""

from __future__ import annotations

import os
import socket

from ..errors import CytorayError

# HTTP/2 with prior knowledge: the client preface and an empty SETTINGS frame. Ray's GCS and its
# client server (ray://) speak gRPC, whose first answer is the server's own SETTINGS frame.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def check_ray_head(address: str | None, timeout_s: float = 5.0) -> None:
    """`address` (host:port, ray://host:port) answers as a gRPC server, or a one-line error.
    'auto', 'local' and None are Ray's own business; TLS clusters (RAY_USE_TLS) are not probed."""
    if (
        not address
        or address in ("auto", "local")
        or os.environ.get("RAY_USE_TLS", "0") not in ("", "0")
    ):
        return
    hostport = address[len("ray://") :] if address.startswith("ray://") else address
    if "://" in hostport:
        raise CytorayError(
            f"--address {address}: give host:port of a Ray head, ray://host:port, or 'auto'"
        )
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CytorayError(
            f"--address {address}: give host:port of a Ray head "
            "(e.g. 127.0.0.1:6379), ray://host:port, or 'auto'"
        )
    fix = "start one with `ray start --head` or check --address / RAY_ADDRESS"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(_H2_PREFACE)
            head = s.recv(9)
    except TimeoutError:
        raise CytorayError(
            f"{address}: something listens there but does not "
            f"answer as a Ray head within {timeout_s:g} s; {fix}"
        ) from None
    except OSError as e:
        raise CytorayError(
            f"no Ray cluster answers at {address} ({e.strerror or e}); {fix}"
        ) from None
    if len(head) < 9 or head[3] != 4:  # not an HTTP/2 SETTINGS frame: a web server, a database, ...
        raise CytorayError(
            f"{address}: something listens there but it is not "
            f"a Ray head (no gRPC answer: {head[:16]!r}); {fix}"
        )


def check_local_placement(run, address: str | None = None) -> None:
    """`run.num_workers` workers of `run.cpus_per_worker` CPUs (and GPUs with `run.use_gpu`) must fit
    this machine, or the cluster joined by address (RAY_ADDRESS): joined here, before the split and
    the MLflow run, and asked for its CPUs and GPUs (Ray would queue the job forever, ignoring Ctrl-C,
    the run left RUNNING). An autoscaling cluster grows past what it has now: CYTORAY_TRUST_AUTOSCALER=1
    leaves the placement to it."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address and os.environ.get("CYTORAY_TRUST_AUTOSCALER", "0") not in ("", "0"):
        return
    per = getattr(run, "gpus_per_worker", 1)
    if address:
        import ray

        from ..training.runner import init_ray

        init_ray(address)  # the job joins it anyway (init_ray is once per process)
        total = ray.cluster_resources()
        cpus, gpus = int(total.get("CPU", 0)), int(total.get("GPU", 0))
        where, fix = (
            f"the Ray cluster at {address}",
            "; or, if it autoscales, set CYTORAY_TRUST_AUTOSCALER=1",
        )
    else:
        import torch

        cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count() if run.use_gpu else 0
        where, fix = "this machine", ", or join a cluster (RAY_ADDRESS)"
    need = run.num_workers * run.cpus_per_worker
    try:
        if need > cpus:
            what = (
                f"use --workers {cpus // run.cpus_per_worker} or fewer"
                if cpus >= run.cpus_per_worker
                else f"set run.cpus_per_worker={cpus} (--set run.cpus_per_worker={cpus})"
            )
            raise CytorayError(
                f"run.num_workers={run.num_workers} x run.cpus_per_worker={run.cpus_per_worker} "
                f"= {need} CPUs, and {where} has {cpus}; {what}{fix}"
            )
        if run.use_gpu and run.num_workers * per > gpus:
            raise CytorayError(
                f"--gpu: {run.num_workers} worker(s) x {per:g} GPU need "
                f"{run.num_workers * per:g} GPUs, and {where} has {gpus}; leave out --gpu (CPU "
                f"training){fix if address else ' or join a cluster with GPUs (RAY_ADDRESS)'}"
            )
    except CytorayError:
        if (
            address
        ):  # leave the cluster as it was found (a process that goes on, e.g. a test, starts clean)
            import ray

            ray.shutdown()
        raise


def check_storage(run) -> None:
    """`run.storage_path` (Ray Train's checkpoints) can be written: refused now, not after the
    data, the split and the MLflow run (`/proc/x` was a traceback from inside Ray)."""
    import tempfile
    from pathlib import Path

    sp = getattr(run, "storage_path", None)
    if not sp or "://" in sp:  # a URI (s3://, gs://) is Ray's storage layer's to check
        return
    anc = Path(sp).expanduser().resolve()
    while not anc.exists():
        anc = anc.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cytoray-probe-", dir=anc))
    except OSError as e:
        raise CytorayError(
            f"run.storage_path={sp}: cannot write in {anc} "
            f"({e.strerror or e}); choose a folder you can write"
        ) from None


def check_class_names(root) -> None:
    """Class folder names become MLflow metric names (`gen/<class>/loss_g`, per-class accuracy): a
    name MLflow refuses ('a b 😀') failed after the whole training. Checked on the folder, first."""
    import re
    from pathlib import Path

    if not root or not Path(root).expanduser().is_dir():
        return  # a missing folder is the loader's to name
    # mlflow.utils.validation.validate_param_and_metric_name (not Windows)
    ok = re.compile(r"^[/\w.\- :]*$")
    for d in sorted(Path(root).expanduser().iterdir()):
        if d.is_dir() and not d.name.startswith(".") and not ok.match(d.name):
            raise CytorayError(
                f"{d}: the class name {d.name!r} cannot be an MLflow metric name "
                "(letters, digits, _ - . : / and spaces only); rename the folder"
            )


# an empty MLflow sqlite store is ~1 MB; a study's runs and metrics take a few more
STORE_MIN_FREE = 16 << 20


def check_store_space(uri: str | None) -> None:
    """A sqlite MLflow store on a disk with under 16 MiB free is refused before the split, the
    cache or a run is written (the store filled mid-migration: a SQLAlchemy traceback)."""
    import shutil
    from pathlib import Path

    from ..tracking.mlflow_utils import tracking_uri

    uri = tracking_uri(uri)
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri[len("sqlite:///") :].split("?")[0]).expanduser().resolve()
    anc = db.parent
    while not anc.exists():
        anc = anc.parent
    free = shutil.disk_usage(anc).free
    if free < STORE_MIN_FREE:
        raise CytorayError(
            f"{db}: {free >> 10} KiB free on its disk, and the MLflow store needs about "
            f"{STORE_MIN_FREE >> 20} MiB; free space there or pass a --tracking-uri on another disk"
        )
