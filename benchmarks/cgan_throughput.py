"""CGAN training throughput under Ray Train vs the same step in a bare PyTorch loop.

    python benchmarks/cgan_throughput.py [--size 64] [--epochs 6] [--threads 1]

Both run the identical `CGANStage.train_step` + validation loss on the same in-memory
tensors, one worker/one process, the same number of torch threads, in this one run
(bare, Ray Train, bare again; the two bare runs are averaged to cancel drift). The Ray
figure is whole-epoch wall time from consecutive reports, so validation, checkpoint
writing and `ray.train.report` are all charged to it. The first epoch of each is warm-up
and not counted. Prints images/s and the ratio (target >= 0.9).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    from cytoray.data.source import simulated_set
    from cytoray.data.splits import make_manifest
    from cytoray.generators.gan import CGANConfig, CGANStage, masks_to_unit, stage_params
    from cytoray.nets.images import to_unit
    from cytoray.training.config import RunConfig
    from cytoray.training.runner import init_ray, run_stages
    from cytoray.training.stage import StageSpec, amp_context

    # 1. Data: the SynCGAN-sized embedded set (150 images), its training split, in memory.
    ds = simulated_set("cytology", 150, a.size, 0)
    man, _ = make_manifest(ds, [3, 1, 1], 0)
    tr, va = ds.subset(man.indices("train")), ds.subset(man.indices("val"))
    train = {"mask": masks_to_unit(tr.masks), "image": to_unit(tr.images)}
    val = {"mask": masks_to_unit(va.masks), "image": to_unit(va.images)}
    mb = sum(v.nbytes for v in (*train.values(), *val.values())) / 2**20
    print(
        f"data: {len(tr)} train + {len(va)} val pairs at {a.size} px held as tensors ({mb:.1f} MiB)"
    )
    params = stage_params(CGANConfig(epochs=a.epochs + 1), a.size)

    def bare() -> float:
        torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        stage = CGANStage(params)
        dev = torch.device("cpu")
        models, gen, amp = (
            stage.build(dev),
            torch.Generator().manual_seed(0),
            amp_context(dev, False),
        )
        opts = stage.optimizers(models)
        t = {k: torch.from_numpy(v) for k, v in train.items()}
        v = {k: torch.from_numpy(x) for k, x in val.items()}
        n, bs, times = len(t["image"]), params["batch_size"], []
        for epoch in range(a.epochs + 1):
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
            for i in range(0, n, bs):
                idx = perm[i : i + bs]
                if len(idx) >= 2:
                    stage.train_step(models, opts, {k: x[idx] for k, x in t.items()}, gen, amp)
            stage.val_loss(models, v, amp)
            times.append(time.perf_counter() - t0)
        return n / float(np.mean(times[1:]))

    def ray_train() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as d:
            spec = StageSpec(
                "bench",
                CGANStage(params),
                train=train,
                val=val,
                fixed={k: x[:4] for k, x in val.items()},
                data_key=man.hash,
            )
            r = run_stages(
                [spec],
                cache_root=Path(d),
                run_cfg=RunConfig(cpus_per_worker=a.threads, sample_every=10**6),
                use_cache=False,
            )["bench"]
        starts = [h["epoch_start"] for h in r.history]
        walls = np.diff(starts)[1:]  # epoch k's start → epoch k+1's start, warm-up dropped
        steps = [h["images_per_s"] for h in r.history[1:]]
        return len(tr) / float(np.mean(walls)), float(np.mean(steps))

    init_ray()
    b1 = bare()
    r_wall, r_steps = ray_train()
    b2 = bare()
    b = (b1 + b2) / 2
    print(f"bare PyTorch loop : {b:7.2f} images/s  (runs: {b1:.2f}, {b2:.2f})")
    print(
        f"Ray Train (epoch) : {r_wall:7.2f} images/s  whole epochs incl. val + checkpoint + report"
    )
    print(f"Ray Train (steps) : {r_steps:7.2f} images/s  training steps only")
    print(
        f"ratio Ray/bare    : {r_wall / b:.3f} (whole epochs), {r_steps / b:.3f} (steps)  target >= 0.9"
    )


if __name__ == "__main__":
    main()
