"""Run one trainer stage under Ray Train, with a content-keyed stage cache.

A stage's run name is `<label>-<hash>`, the hash covering everything that shaped it
(stage, its parameters, the data key = manifest hash + split + class, the seed). So:
- a finished stage is found by name and reused (`final/done.json`): the stage cache;
- an interrupted stage started again resumes from its last Ray Train checkpoint
  (Train V2 restores a run with the same name and storage path);
- names carry no timestamps, so restores find them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..io import atomic_dir, stable_hash, write_json
from .train_loop import BEST_FILE, GRID_DIR, META_FILE, STATE_FILE


@dataclasses.dataclass
class StageResult:
    dir: Path  # final artefacts: best_generator.pt, meta.json, history.json, grids/
    history: list[dict]
    meta: dict
    cached: bool
    seconds: float

    def generator_state(self) -> dict:
        import torch

        return torch.load(self.dir / BEST_FILE, map_location="cpu")

    def grids(self) -> list[Path]:
        return sorted((self.dir / GRID_DIR).glob("*.png"))


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join, with `address` / RAY_ADDRESS) a Ray cluster once per process."""
    import logging

    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # The dashboard hosts the state API that Ray Train V2's placement-group cleaner polls.
    kwargs = dict(include_dashboard=True, logging_level=logging.WARNING, log_to_driver=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)


def stage_key(stage: str, params: dict, data_key: str, seed: int) -> str:
    return stable_hash({"stage": stage, "params": params, "data": data_key, "seed": seed})


def run_stage(
    stage: str,
    params: dict,
    *,
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray] | None,
    fixed: dict[str, np.ndarray],
    label: str,
    data_key: str,
    cache_root: str | Path,
    run_cfg,
    use_cache: bool = True,
    loop: Callable[[dict], None] | None = None,
    callbacks: list | None = None,
) -> StageResult:
    """Train `stage` (or reuse its cached result) and return its final artefacts.

    `loop` replaces the generator loop (e.g. the classifier loop); it gets the same
    `train_loop_config` and must report checkpoints holding STATE_FILE (with
    `["state"]["history"]`), BEST_FILE and META_FILE.
    """
    from ray.train import CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cache_root = Path(cache_root).resolve()
    name = f"{label}-{stage_key(stage, params, data_key, run_cfg.seed)}"
    final = cache_root / name / "final"
    if use_cache and (final / "done.json").is_file():
        done = json.loads((final / "done.json").read_text())
        print(f"[cache] {label}: reusing {final}", file=sys.stderr, flush=True)
        return StageResult(final, done["history"], json.loads((final / META_FILE).read_text()), True, 0.0)

    init_ray()
    # Train V2 reroutes worker print() through logging *and* tees it to stdout, so every
    # progress line reached the console twice; Ray Train propagates this switch to workers.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    storage = Path(run_cfg.storage_path).resolve() if run_cfg.storage_path else cache_root / "ray"
    resources = {"CPU": run_cfg.cpus_per_worker}
    if run_cfg.use_gpu:
        resources["GPU"] = run_cfg.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker=loop or _loop,
        train_loop_config={
            "stage": stage,
            "params": params,
            "train": train,
            "val": val,
            "fixed": fixed,
            "label": label,
            "seed": run_cfg.seed,
            "sample_every": run_cfg.sample_every,
            "checkpoint_every": run_cfg.checkpoint_every,
            "mixed_precision": run_cfg.mixed_precision,
            "threads": run_cfg.cpus_per_worker,
        },
        scaling_config=ScalingConfig(num_workers=run_cfg.num_workers, use_gpu=run_cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=run_cfg.keep_checkpoints),
            logging_config=LoggingConfig(log_level="WARNING"),  # our own per-epoch line is the progress
            callbacks=callbacks or [],
        ),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    if result.checkpoint is None:
        raise RuntimeError(f"stage {name} finished without a checkpoint (see the Ray log above)")
    import torch

    with result.checkpoint.as_directory() as d:
        d = Path(d)
        history = torch.load(d / STATE_FILE, map_location="cpu", weights_only=False)["state"]["history"]
        with atomic_dir(final, overwrite=True) as tmp:
            shutil.copy2(d / BEST_FILE, tmp / BEST_FILE)
            shutil.copy2(d / META_FILE, tmp / META_FILE)
            if (d / GRID_DIR).is_dir():
                shutil.copytree(d / GRID_DIR, tmp / GRID_DIR)
            write_json(tmp / "done.json", {"history": history, "seconds": seconds, "checkpoint": result.checkpoint.path})
    return StageResult(final, history, json.loads((final / META_FILE).read_text()), False, seconds)


def _loop(config: dict) -> None:
    # Imported inside the worker process (keeps the driver's import light).
    from .train_loop import train_loop_per_worker

    train_loop_per_worker(config)
