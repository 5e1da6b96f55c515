"""The one Ray Train worker loop (`train_loop_per_worker`): every stage of a job, in order.

A job is a list of `StageSpec`s (a generator's stages, or one classifier). For each stage the
loop seeds, builds, resumes, runs epochs, reports every epoch and keeps the best epoch's weights.
The whole (small) training split lives on the device as tensors; a batch is an index into them,
so the hot loop does no disk reads. With several workers the models are wrapped in DDP and each
rank takes an equal shard of the epoch's order (DDP needs equal step counts); losses are
summed over ranks before they are reported.

Checkpoints (rank 0, every `checkpoint_every` epochs and at the end of each stage) hold the
finished stages (`done/<i>/`: best weights, meta, history, grids) and the running stage's full
state (`state.pt`), so a killed job restarted with the same name resumes mid-stage and never
retrains a finished one. Everything in them is tensors and plain Python values: they load with
`weights_only=True`.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..errors import TrainingError
from .stage import StageSpec, amp_context, use_channels_last

BEST_FILE, META_FILE, HISTORY_FILE, STATE_FILE, GRID_DIR, DONE_DIR = (
    "best.pt",
    "meta.json",
    "history.json",
    "state.pt",
    "grids",
    "done",
)


# ----------------------------------------------------------------------------- checkpoint files


def save_result(d: Path, res: dict) -> None:
    """A finished stage's product: best weights, meta, per-epoch history, sample grids."""
    d.mkdir(parents=True, exist_ok=True)
    torch.save(res["best"], d / BEST_FILE)
    (d / META_FILE).write_text(json.dumps(res["meta"], indent=2, default=str))
    (d / HISTORY_FILE).write_text(json.dumps(res["history"]))
    (d / GRID_DIR).mkdir(exist_ok=True)
    for name, png in res["grids"].items():
        (d / GRID_DIR / name).write_bytes(png)


def load_result(d: Path) -> dict:
    return {
        "best": torch.load(d / BEST_FILE, map_location="cpu", weights_only=True),
        "meta": json.loads((d / META_FILE).read_text()),
        "history": json.loads((d / HISTORY_FILE).read_text()),
        "grids": {p.name: p.read_bytes() for p in sorted((d / GRID_DIR).glob("*.png"))},
    }


def _save_checkpoint(d: Path, specs: list[StageSpec], finished: dict, running: dict | None) -> None:
    for i, spec in enumerate(specs):
        if spec.label in finished:
            save_result(d / DONE_DIR / str(i), finished[spec.label])
    if running is not None:
        torch.save(running, d / STATE_FILE)


def _load_checkpoint(d: Path, specs: list[StageSpec]) -> tuple[dict, dict | None]:
    finished = {
        spec.label: load_result(d / DONE_DIR / str(i))
        for i, spec in enumerate(specs)
        if (d / DONE_DIR / str(i)).is_dir()
    }
    running = (
        torch.load(d / STATE_FILE, map_location="cpu", weights_only=True)
        if (d / STATE_FILE).is_file()
        else None
    )
    return finished, running


def kept_state(models: dict, keep: str | tuple[str, ...]) -> dict:
    """CPU copies of the kept model's state dict, or {name: state dict} when a stage keeps several."""
    copy = lambda m: {k: t.detach().cpu().clone() for k, t in m.state_dict().items()}  # noqa: E731
    return (
        copy(models[keep]) if isinstance(keep, str) else {name: copy(models[name]) for name in keep}
    )


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def quiet_report_log() -> None:
    """Hide Ray Train's per-report INFO line ("Reporting training result ...") on a worker.

    Its logger is named by file path, so `LoggingConfig(log_level)` (which filters only
    `ray.train.*` names) does not reach it; our own per-epoch line is the progress.
    """
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # a Ray without Train V2's module layout: leave its logging alone
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
    # A full disk under a checkpoint upload is named by the driver in
    # one line (runner._fit, with the storage path); the worker's "Error
    # in training function" traceback of it is noise, once per retry.
    util = logging.getLogger("ray.train.v2._internal.util")
    if not any(isinstance(f, _FullDiskFilter) for f in util.filters):
        util.addFilter(_FullDiskFilter())


class _FullDiskFilter:
    def filter(self, record) -> bool:
        text = record.getMessage()
        return not any(
            s in text
            for s in ("No space left on device", "database or disk is full", "Disk quota exceeded")
        )


# ----------------------------------------------------------------------------- the loop

# The metric key of a report that ends a job with a TrainingError (see train_loop_per_worker).
ERROR_KEY, ERROR_FILE = "cytoray_training_error", "training_error.txt"


def _node() -> dict:
    """This worker's Ray node id and host name."""
    import socket

    import ray

    return {"id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    specs: list[StageSpec] = config["specs"]
    finished: dict[str, dict] = {}
    running = None
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            finished, running = _load_checkpoint(Path(d), specs)
    try:
        for spec in specs:
            if spec.label not in finished:
                resume = running if running is not None and running["label"] == spec.label else None
                finished[spec.label] = _run(
                    spec, specs, finished, resume, config, rank, world, device
                )
    except TrainingError as e:
        # A user's error (no optimiser step, a diverged loss) is the same on every rank and on every
        # retry: report it and end normally, so Ray Train neither restarts the job nor prints a
        # traceback; the runner raises it in the driver as the user's one-line answer.
        # (Train V2 keeps a result's metrics with its checkpoint: rank 0 attaches a one-file one.)
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / ERROR_FILE).write_text(str(e))
            ray.train.report(
                {ERROR_KEY: str(e)},
                checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None,
            )


def _run(
    spec: StageSpec,
    specs,
    finished: dict,
    resume: dict | None,
    config: dict,
    rank: int,
    world: int,
    device,
) -> dict:
    import ray.train
    import ray.train.torch

    stage, seed, label = spec.stage, spec.seed, spec.label
    amp = amp_context(
        device, bool(config.get("mixed_precision", True)), config.get("cpu_bf16", False)
    )
    # 1. Data: the whole split on the device once.
    train, val, fixed = (
        stage.prepare(spec.train, device),
        stage.prepare(spec.val, device) or None,
        stage.prepare(spec.fixed, device),
    )
    n = len(next(iter(train.values())))
    # 2. Models (same init on every rank), optimisers, the batch generator; a resumed stage's state.
    torch.manual_seed(seed)
    models = stage.build(device)
    # NHWC weights; convolutions then keep activations NHWC too
    if use_channels_last(device, config.get("channels_last", False)):
        models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    opts = stage.optimizers(models)
    gen = stage.rng(device, seed, rank)
    state: dict = {"epoch": -1, "best_key": None, "best_epoch": -1, "history": []}
    best: dict = {}
    grids: dict[str, bytes] = {}
    if resume is not None:
        for k, m in models.items():
            m.load_state_dict(resume["models"][k])
        for k, o in opts.items():
            o.load_state_dict(resume["opts"][k])
        gen.set_state(resume["rng"])
        state, best, grids = resume["state"], resume["best"], dict(resume["grids"])
        if rank == 0:
            print(f"[{label}] resumed after epoch {state['epoch'] + 1}", flush=True)
    bare = models
    if world > 1:
        # modules nothing trains (a moving average, an
        # augmenter) stay bare: DDP wraps trained weights
        models = {
            k: ray.train.torch.prepare_model(
                m, move_to_device=False, parallel_strategy_kwargs=stage.ddp_kwargs
            )
            if any(q.requires_grad for q in m.parameters())
            else m
            for k, m in models.items()
        }
    epochs, bs = stage.epochs, stage.batch_size
    for epoch in range(state["epoch"] + 1, epochs):
        # 3. One epoch: the shared order, this rank's equal shard, batches of >= 2 (BatchNorm).
        t0, started = time.perf_counter(), time.time()
        # dropout/noise stream: resumable per epoch
        torch.manual_seed(seed * 1000003 + epoch * world + rank)
        # e.g. a learning-rate schedule (a function of the epoch: resumes exactly)
        stage.begin_epoch(opts, epoch)
        order = stage.order(train, epoch, seed)
        shard = order[: len(order) - len(order) % world][rank::world].to(device)
        sums: dict = defaultdict(float)
        seen = steps = 0
        for i in range(0, len(shard), bs):
            idx = shard[i : i + bs]
            if len(idx) < 2:
                continue
            losses = stage.train_step(models, opts, {k: v[idx] for k, v in train.items()}, gen, amp)
            for k, v in losses.items():  # device tensors stay on the device: one sync per epoch
                sums[k] = sums[k] + (v.detach().double() if torch.is_tensor(v) else float(v)) * len(
                    idx
                )
            seen += len(idx)
            steps += 1
        if steps == 0:
            raise TrainingError(
                f"[{label}] made no optimiser step: {n} training images on {world} worker(s) with "
                f"batch_size {bs} leave no batch of at least 2; add images or lower batch_size"
            )
        keys = sorted(sums)
        tot = torch.stack(
            [torch.as_tensor(sums[k], dtype=torch.float64, device=device) for k in keys]
            + [torch.tensor(float(seen), dtype=torch.float64, device=device)]
        )
        if world > 1:  # the history shows the whole epoch, not rank 0's shard
            torch.distributed.all_reduce(tot)
        tot = tot.tolist()
        dt = time.perf_counter() - t0
        metrics = {k: v / tot[-1] for k, v in zip(keys, tot)}
        # images_per_s counts the training steps only;
        # epoch_start lets a benchmark time whole epochs
        metrics.update(epoch=epoch, images_per_s=tot[-1] / dt, epoch_s=dt, epoch_start=started)
        # 4. Validation and best-epoch selection.
        metrics.update(stage.validate(bare, val, amp) or {})
        bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise TrainingError(
                f"[{label}] epoch {epoch + 1}: {bad[0]} is {metrics[bad[0]]} (not "
                "finite); the run diverged: lower the learning rate or the loss weights"
            )
        key = tuple(stage.selection(metrics, epoch))
        if state["best_key"] is None or key < tuple(state["best_key"]):
            state["best_key"], state["best_epoch"] = key, epoch
            best = kept_state(bare, stage.keep)
        metrics["best_epoch"] = state["best_epoch"]
        state["epoch"] = epoch
        state["history"].append(metrics)
        if rank == 0 and (epoch % int(config["sample_every"]) == 0 or epoch == epochs - 1):
            g = stage.grid(bare, fixed)
            if g is not None:
                grids[f"epoch_{epoch:04d}.png"] = _png(g)
        # 5. Report every epoch; rank 0 attaches a checkpoint every `checkpoint_every` epochs and
        #    when the stage ends (then the finished stage rides in every later checkpoint).
        last = epoch == epochs - 1
        with_ckpt = rank == 0 and (last or (epoch + 1) % int(config["checkpoint_every"]) == 0)
        result = None
        if last:
            best_metrics = state["history"][state["best_epoch"]]
            meta = {
                "stage": stage.kind,
                "label": label,
                "params": stage.params,
                "best_epoch": state["best_epoch"],
                "epoch": epoch,
                "best_metrics": best_metrics,
                # where rank 0 trained it: a cluster's trials are seen on their nodes
                "node": _node(),
                **stage.meta(),
            }
            result = {"best": best, "meta": meta, "history": state["history"], "grids": grids}
        if rank == 0:
            print(
                f"[{label}] epoch {epoch + 1}/{epochs} {stage.progress(metrics)} "
                f"({metrics['images_per_s']:.1f} img/s)",
                flush=True,
            )
        if with_ckpt:
            running = (
                None
                if last
                else {
                    "label": label,
                    "models": {k: m.state_dict() for k, m in bare.items()},
                    "opts": {k: o.state_dict() for k, o in opts.items()},
                    "rng": gen.get_state(),
                    "state": state,
                    "best": best,
                    "grids": grids,
                }
            )
            with tempfile.TemporaryDirectory() as d:
                _save_checkpoint(
                    Path(d), specs, {**finished, **({label: result} if last else {})}, running
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
    return result
