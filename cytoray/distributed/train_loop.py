"""The Ray Train loop that runs any generator stage (`train_loop_per_worker`).

The whole (small) training split lives on the device as tensors; a batch is an index into
them, so the hot loop does no disk reads and no per-sample Python decoding. Every rank reports
metrics each epoch; rank 0 attaches a checkpoint every `checkpoint_every` epochs and at the
end through `ray.train.report`; a killed run started again with the same
name and storage path resumes from it. With several workers the models are wrapped in DDP
and each rank takes a disjoint shard of every epoch's permutation.
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

from ..generators.stages import amp_context, get_stage, unwrap

STATE_FILE, BEST_FILE, META_FILE, GRID_DIR = "state.pt", "best_generator.pt", "meta.json", "grids"


def _load(d: Path, models, opts, gen: torch.Generator) -> tuple[dict, dict[str, bytes]]:
    st = torch.load(d / STATE_FILE, map_location="cpu", weights_only=False)
    for k, m in models.items():
        unwrap(m).load_state_dict(st["models"][k])
    for k, o in opts.items():
        o.load_state_dict(st["opts"][k])
    gen.set_state(st["rng"])
    grids = {p.name: p.read_bytes() for p in sorted((d / GRID_DIR).glob("*.png"))}
    return st["state"], grids


def _save(d: Path, models, opts, gen, state: dict, best: dict, grids: dict[str, bytes], meta: dict) -> None:
    torch.save(
        {
            "models": {k: unwrap(m).state_dict() for k, m in models.items()},
            "opts": {k: o.state_dict() for k, o in opts.items()},
            "rng": gen.get_state(),
            "state": state,
        },
        d / STATE_FILE,
    )
    torch.save(best, d / BEST_FILE)
    (d / GRID_DIR).mkdir(exist_ok=True)
    for name, png in grids.items():
        (d / GRID_DIR / name).write_bytes(png)
    (d / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


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


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    quiet_report_log()
    # 1. Context: rank, device, seeds (each rank its own stream, same epoch permutation).
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    seed = int(config["seed"])
    torch.manual_seed(seed + rank)
    gen = torch.Generator().manual_seed(seed * 7919 + rank)
    stage = get_stage(config["stage"], config["params"])
    p = stage.p
    amp = amp_context(device, bool(config.get("mixed_precision", True)))

    # 2. Data: the whole split on the device once.
    def on_device(arrays: dict | None) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(np.array(v)).to(device) for k, v in (arrays or {}).items()}  # copy: Ray's arrays are read-only

    train, val, fixed = on_device(config["train"]), on_device(config.get("val")) or None, on_device(config["fixed"])
    n = len(next(iter(train.values())))

    # 3. Models, optimisers, and the last checkpoint if this run is being resumed.
    models = stage.build(device)
    opts = stage.optimizers(models)
    state = {"epoch": -1, "best_val": math.inf, "best_epoch": -1, "history": []}
    grids: dict[str, bytes] = {}
    best: dict = {}
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state, grids = _load(Path(d), models, opts, gen)
            best = torch.load(Path(d) / BEST_FILE, map_location="cpu")
        if rank == 0:
            print(f"[{config['label']}] resumed after epoch {state['epoch'] + 1}", flush=True)
    if world > 1:
        # broadcast_buffers=False: D runs twice per step (real, fake) before backward.
        models = {
            k: ray.train.torch.prepare_model(m, move_to_device=False, parallel_strategy_kwargs={"broadcast_buffers": False})
            for k, m in models.items()
        }

    epochs, bs = int(p["epochs"]), int(p["batch_size"])
    meta = {"stage": stage.name, "label": config["label"], "generator_kwargs": stage.generator_kwargs(), "params": p}
    for epoch in range(state["epoch"] + 1, epochs):
        # 4. One epoch: a shared permutation, this rank's shard, batches of >= 2 (BatchNorm).
        t0, started = time.perf_counter(), time.time()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))[rank::world]
        sums: dict[str, float] = defaultdict(float)
        steps = seen = 0
        for i in range(0, len(perm), bs):
            idx = perm[i : i + bs]
            if len(idx) < 2:
                continue
            idx = idx.to(device)
            losses = stage.train_step(models, opts, {k: v[idx] for k, v in train.items()}, gen, amp)
            for k, v in losses.items():
                sums[k] += v
            steps += 1
            seen += len(idx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        metrics = {k: v / max(steps, 1) for k, v in sums.items()}
        # images_per_s counts the training steps only; epoch_start lets a benchmark measure whole
        # epochs (validation, checkpoint and report included) from consecutive reports.
        metrics.update(epoch=epoch, images_per_s=seen * world / dt, epoch_s=dt, epoch_start=started)

        # 5. Validation (CGAN: G loss on val pairs) and best-generator selection.
        bare = {k: unwrap(m) for k, m in models.items()}
        v = stage.val_loss(bare, val, amp)
        if v is not None:
            metrics["val_loss_g"] = v
        score = v if v is not None else -epoch  # no validation: the last epoch is the best
        if score <= state["best_val"] or state["best_epoch"] < 0:
            state["best_val"], state["best_epoch"] = score, epoch
            best = {k: t.detach().cpu().clone() for k, t in bare[stage.generator_key].state_dict().items()}
        metrics["best_epoch"] = state["best_epoch"]
        state["epoch"] = epoch
        state["history"].append(metrics)
        if rank == 0 and (epoch % int(config["sample_every"]) == 0 or epoch == epochs - 1):
            grids[f"epoch_{epoch:04d}.png"] = _png(stage.grid(bare, fixed))

        # 6. Report every epoch; rank 0 attaches a checkpoint every `checkpoint_every` epochs
        #    and at the end (the resume point and the final artefact).
        last = epoch == epochs - 1
        with_ckpt = rank == 0 and (last or (epoch + 1) % int(config.get("checkpoint_every", 1)) == 0)
        if rank == 0:
            shown = " ".join(f"{k} {metrics[k]:.4f}" for k in ("loss_d", "loss_g", "mse", "val_loss_g") if k in metrics)
            print(f"[{config['label']}] epoch {epoch + 1}/{epochs} {shown} ({metrics['images_per_s']:.1f} img/s)", flush=True)
        if with_ckpt:
            with tempfile.TemporaryDirectory() as d:
                _save(Path(d), bare, opts, gen, state, best, grids, {**meta, "best_epoch": state["best_epoch"], "epoch": epoch})
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
