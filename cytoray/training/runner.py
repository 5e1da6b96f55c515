"""Run stages under Ray Train, one job for all that are not cached (the content-keyed stage cache).

A finished stage lives in `<cache>/<label>-<key>/final/` where the key hashes everything that
shaped it (its trainer, every parameter, its data, its seed), so:
- a stage already trained (by this trial, an earlier trial, or an earlier study) is reused;
- every stage still to train runs in ONE Ray Train job (a generator's stages: both class mask
  GANs and the CGAN together), so a job's start-up is paid once;
- the job's name hashes the stages it runs, with no timestamp: a job that was killed and is
  started again with the same stages resumes from its last checkpoint (Train V2 restores a run
  with the same name and storage path).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from .. import process_env
from ..errors import ConfigError, CytorayError, TrainingError
from ..io import atomic_dir, stable_hash, write_json
from .config import RunConfig
from .loop import (
    BEST_FILE,
    DONE_DIR,
    ERROR_FILE,
    GRID_DIR,
    HISTORY_FILE,
    META_FILE,
    load_result,
    save_result,
)
from .stage import StageSpec


@dataclasses.dataclass
class StageResult:
    dir: Path  # final artefacts: best.pt, meta.json, history.json, grids/, done.json (written last)
    history: list[dict]
    meta: dict
    cached: bool
    seconds: float

    def best_state(self) -> dict:
        import torch

        return torch.load(self.dir / BEST_FILE, map_location="cpu", weights_only=True)

    def grids(self) -> list[Path]:
        return sorted((self.dir / GRID_DIR).glob("*.png"))


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join, with `address` / RAY_ADDRESS) a Ray cluster once per process."""
    import ray

    from ..quiet import ray_init_options

    if ray.is_initialized():
        return
    process_env.ensure("ray")  # worker print() once, not twice (process_env.py)
    address = address or os.environ.get("RAY_ADDRESS")
    # The dashboard hosts the state API that Ray Train V2's placement-group cleaner polls.
    # worker output and log level: cytoray.quiet
    kwargs = dict(include_dashboard=True, **ray_init_options(address))
    if address:
        check_address(address)
        # A loopback-only head (cytoray's own local cluster, below) is joined on loopback: Ray turns
        # 127.0.0.1 into the machine's address, where nothing listens, and waited for minutes.
        try:
            with _loopback_only() if _loopback_head(address) else contextlib.nullcontext():
                ray.init(address=address, **kwargs)
        except (
            ConnectionError,
            RuntimeError,
        ) as e:  # a head that answers gRPC but refuses this driver
            chain = f"{e} {e.__cause__} {getattr(e.__cause__, '__cause__', '')}"
            hint = (
                "it wants its token: set RAY_AUTH_MODE=token (the "
                "token from ~/.ray/auth_token or RAY_AUTH_TOKEN)"
                if "AuthToken" in chain or "Authentication" in chain
                else "check --address / RAY_ADDRESS and the head's log"
            )
            raise CytorayError(
                f"cannot join the Ray cluster at {address} ({str(e).splitlines()[0][:120]}); {hint}"
            ) from None
    else:
        port = _free_port()
        process_env.set_dashboard(port)  # its own state API, not another local cluster's
        # address="local": a new cluster even when
        # /tmp/ray/ray_current_cluster names another (or a dead) one
        with _loopback_only():
            ray.init(
                address="local",
                num_cpus=num_cpus,
                dashboard_host="127.0.0.1",
                dashboard_port=port,
                **kwargs,
            )


@contextlib.contextmanager
def _loopback_only():
    """A local cluster listens on 127.0.0.1 only (GCS, raylet, dashboard agent, metrics, workers):
    Ray takes the machine's address as the node's and binds 0.0.0.0 there, though nothing outside
    the machine talks to a laptop study. Ray's own switch for single-machine clusters (the one it
    sets on macOS/Windows) makes the node address loopback; the processes started by ray.init
    inherit it. Restored afterwards (the node's address is then fixed), and left alone when the
    user set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER themselves."""
    from ray._private import ray_constants

    var = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    if var in os.environ:
        yield
        return
    old = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[var], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        os.environ.pop(var, None)
        ray_constants.ENABLE_RAY_CLUSTER = old


def _loopback_head(address: str) -> bool:
    """`address` is 127.0.0.1:PORT (or localhost) and the head there does not also listen on the
    machine's own address: a head bound to loopback only."""
    import socket

    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "[::1]", "::1") or not port.isdigit():
        return False
    from ray._private.services import node_ip_address_from_perspective

    try:
        with socket.create_connection((node_ip_address_from_perspective(), int(port)), timeout=2):
            return False
    except OSError:
        return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """A Ray address that does not answer is an error within seconds, naming it (ray.init would
    wait for many minutes and ignore Ctrl-C)."""
    import socket

    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise CytorayError(
            f"--address {address}: give host:port of a Ray head (e.g. 127.0.0.1:6379) or 'auto'"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise CytorayError(
            f"no Ray cluster answers at {address} ({e.strerror or e}); "
            "start one with `ray start --head` or check --address"
        ) from None


def ship_by_value(cls: type) -> None:
    """Let Ray pickle a class (and its module's code) by value when it lives outside cytoray: a
    plugin or a test's own module that a fresh worker process could not import by name."""
    if not cls.__module__.startswith("cytoray.") and cls.__module__ in sys.modules:
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[cls.__module__])


def _final(spec: StageSpec, cache_root: Path) -> Path:
    return cache_root / spec.name / "final"


def cached_result(spec: StageSpec, cache_root: Path) -> StageResult | None:
    final = _final(spec, cache_root)
    if not (final / "done.json").is_file():
        return None
    return StageResult(
        final,
        json.loads((final / HISTORY_FILE).read_text()),
        json.loads((final / META_FILE).read_text()),
        True,
        0.0,
    )


def user_error(e: BaseException, seen: set | None = None) -> CytorayError | None:
    """The CytorayError a worker raised, found inside Ray Train's wrappers (or None)."""
    seen = seen if seen is not None else set()
    if e is None or id(e) in seen:
        return None
    seen.add(id(e))
    if isinstance(e, CytorayError):
        return CytorayError(str(e).strip().splitlines()[-1]) if "Traceback" in str(e) else e
    inner = [
        e.__cause__,
        getattr(e, "cause", None),
        getattr(e, "controller_failure", None),
        *getattr(e, "worker_failures", {}).values(),
    ]
    for sub in inner:
        if isinstance(sub, BaseException) and (found := user_error(sub, seen)):
            return found
    return None


def run_stages(
    specs: list[StageSpec],
    *,
    cache_root: str | Path,
    run_cfg: RunConfig,
    use_cache: bool = True,
    callbacks: list | None = None,
    job: str | None = None,
) -> dict[str, StageResult]:
    """Train the stages that are not cached yet in one Ray Train job; return every stage's result.

    `callbacks` go to Ray Train (e.g. Tune's report callback, so ASHA sees each epoch).
    """
    cache_root = Path(cache_root).resolve()
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"stage labels must be unique in a job: {labels}")
    results: dict[str, StageResult] = {}
    pending = []
    for spec in specs:
        hit = cached_result(spec, cache_root) if use_cache else None
        if hit is not None:
            print(f"[cache] {spec.label}: reusing {hit.dir}", file=sys.stderr, flush=True)
            results[spec.label] = hit
        else:
            pending.append(spec)
    if pending:
        for spec in pending:
            check_batches(spec, run_cfg.num_workers)
        results.update(_fit(pending, cache_root, run_cfg, callbacks, job))
    return {s.label: results[s.label] for s in specs}


def reap_orphaned_placement_groups() -> int:
    """Remove the placement groups whose creating actor is dead; return how many.

    A Ray Train job's workers sit in a placement group its controller actor creates. Ray frees such a
    group only when both its creator and the creator's job (the study's driver, alive for the whole
    study) are gone, so Ray Train starts a cleaner that removes it when the controller dies. When
    ASHA stops a trial mid-job, Tune kills the trial; its controller, shutting down, stops that
    cleaner first and then fails to shut its workers down, and the group stays reserved. On a 2-CPU
    machine the next job then waited for CPUs forever (measured: a study with
    run.cpus_per_worker=2 hung at its 4th trial). Called before each job: a group whose
    creator is a dead actor can serve no one. Groups the driver itself made (Tune's trial groups,
    no creator actor) and detached ones are left alone."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    table = gcs_pb2.PlacementGroupTableData
    try:
        rows = [
            table.FromString(r)
            for r in state._connect_and_get_accessor().get_placement_group_table()
        ]
    except Exception:  # noqa: BLE001 -- a private accessor: when it changes, skip the reaping
        return 0
    nil = ray.ActorID.nil().binary()
    removed = 0
    for row in rows:
        if (
            row.state == table.CREATED
            and row.creator_actor_dead
            and not row.is_detached
            and row.creator_actor_id not in (b"", nil)
        ):
            try:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(row.placement_group_id)))
                removed += 1
            except Exception:  # noqa: BLE001 -- removed meanwhile (its cleaner woke up)
                pass
    return removed


def check_batches(spec: StageSpec, workers: int) -> None:
    """Refuse, before a job starts, a stage that could make no optimiser step: the loop gives each of
    `workers` ranks an equal shard (n // workers images) in batches of `batch_size` per rank and skips
    batches under 2 (BatchNorm), so a per-rank batch or shard under 2 trains nothing."""
    if not spec.train:
        return
    n, bs = len(next(iter(spec.train.values()))), int(spec.stage.batch_size)
    if bs < 2:
        why = f"batch_size {bs} is per worker and a batch needs 2 images; set batch_size >= 2"
    elif n // workers < 2:
        why = f"{n} training images on {workers} worker(s) leave each worker {n // workers}; add images or lower run.num_workers"
    else:
        return
    raise ConfigError(f"[{spec.label}] would have made no optimiser step: {why}")


def _fit(
    pending: list[StageSpec], cache_root: Path, run_cfg: RunConfig, callbacks, job: str | None
) -> dict[str, StageResult]:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchTrainer

    from .loop import train_loop_per_worker

    init_ray()
    # Read by the trainer in this process (a Tune trial's,
    # or the CLI's) and handed to its controller.
    process_env.ensure("train")
    for spec in pending:
        ship_by_value(type(spec.stage))
    name = (
        pending[0].name
        if len(pending) == 1
        else f"{job or pending[0].label}-{stable_hash([s.name for s in pending])}"
    )
    storage = Path(run_cfg.storage_path).resolve() if run_cfg.storage_path else cache_root / "ray"
    resources = {"CPU": run_cfg.cpus_per_worker}
    if run_cfg.use_gpu:
        resources["GPU"] = run_cfg.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config={
            "specs": pending,
            "sample_every": run_cfg.sample_every,
            "checkpoint_every": run_cfg.checkpoint_every,
            "mixed_precision": run_cfg.mixed_precision,
            "cpu_bf16": run_cfg.cpu_bf16,
            "channels_last": run_cfg.channels_last,
            "threads": run_cfg.cpus_per_worker,
        },
        scaling_config=ScalingConfig(
            num_workers=run_cfg.num_workers, use_gpu=run_cfg.use_gpu, resources_per_worker=resources
        ),
        run_config=RayRunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=run_cfg.keep_checkpoints),
            # a lost worker or node: restart from the last checkpoint
            failure_config=FailureConfig(max_failures=run_cfg.max_failures),
            # our own per-epoch line is the progress
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=callbacks or [],
        ),
    )
    reap_orphaned_placement_groups()
    t0 = time.perf_counter()
    try:
        result = trainer.fit()
    except (
        Exception
    ) as e:  # a worker's CytorayError (no step, diverged loss) is the user's one-line answer
        err = user_error(e)
        if err is not None:
            raise err from None
        from ..io import full_disk_message

        if (
            full := full_disk_message(e, str(storage))
        ) is not None:  # a worker's checkpoint upload (pyarrow) hit a full disk
            raise CytorayError(full) from None
        raise
    seconds = time.perf_counter() - t0
    if (
        result.checkpoint is not None
    ):  # the job ended on a user's error (see loop.train_loop_per_worker)
        with result.checkpoint.as_directory() as d:
            if (Path(d) / ERROR_FILE).is_file():
                raise TrainingError((Path(d) / ERROR_FILE).read_text())
    if result.checkpoint is None:
        raise RuntimeError(
            f"Ray Train job {name} finished without a checkpoint (see the Ray log above)"
        )
    out: dict[str, StageResult] = {}
    with result.checkpoint.as_directory() as d:
        for i, spec in enumerate(pending):
            src = Path(d) / DONE_DIR / str(i)
            if not src.is_dir():
                raise RuntimeError(
                    f"Ray Train job {name}: stage {spec.label} is missing from its final checkpoint"
                )
            res = load_result(src)
            final = _final(spec, cache_root)
            with atomic_dir(final, overwrite=True) as tmp:
                save_result(tmp, res)
                # last: marks it complete
                write_json(
                    tmp / "done.json", {"seconds": seconds, "checkpoint": result.checkpoint.path}
                )
            out[spec.label] = StageResult(final, res["history"], res["meta"], False, seconds)
    return out
