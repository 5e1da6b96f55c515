"""DDP for the CGAN stage on the CPU: 2 workers at the same global batch as 1 worker.

The workers are plain torch.distributed processes (torch.multiprocessing, gloo on 127.0.0.1), not Ray
Train: they do what the loop does under Ray (same seed before `build`, DDP with the stage's `ddp_kwargs`
around every model that trains, an equal shard of each global batch per rank, the rank's own generator),
without a Ray cluster's start-up in a unit test.

- Instance norm, no dropout, no D augmentation: every sample's forward is independent of the others,
  so averaging two half-batch gradients is the whole-batch gradient: each step's losses must agree with
  1 worker within 1e-3 relative, and G's weights after 3 Adam steps must lie no further from 1 worker's
  than twice the distance between two 1-worker runs that sum each batch in another order.
- The defaults (BatchNorm, dropout, D augmentation, EMA of G): each rank normalises over its own shard
  (torch's SyncBatchNorm is GPU-only, so on the CPU it cannot be synchronised) and draws its own
  dropout and augmentation, so the losses are not 1 worker's; what must hold is that it runs (the EMA
  copy and the augmenter have nothing to average) and that DDP keeps G identical on both ranks.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cytoray.generators.gan import CGANConfig, CGANStage, stage_params
from cytoray.training.stage import amp_context, unwrap

CPU, SIZE, GLOBAL_BATCH, STEPS = torch.device("cpu"), 32, 4, 3
INDEPENDENT = {"norm": "instance", "dropout": 0.0, "diffaug": "", "ema": 0.0}


def _config(world: int, overrides: dict) -> CGANConfig:
    names = {f.name for f in dataclasses.fields(CGANConfig)}
    kw = {k: v for k, v in overrides.items() if k in names}  # configs without the small-data keys still run
    return CGANConfig(g_base=4, d_base=4, batch_size=GLOBAL_BATCH // world, **kw)


def _worker(rank: int, world: int, port: int, overrides: dict, out: str, reverse: bool = False) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        stage = CGANStage(stage_params(_config(world, overrides), SIZE))
        torch.manual_seed(0)  # the loop: the same initial weights on every rank
        models = stage.build(CPU)
        opts = stage.optimizers(models)
        if world > 1:
            ddp = torch.nn.parallel.DistributedDataParallel
            models = {k: ddp(m, **stage.ddp_kwargs) if any(q.requires_grad for q in m.parameters()) else m
                      for k, m in models.items()}  # fmt: skip
        gen, amp = stage.rng(CPU, 0, rank), amp_context(CPU, False)
        g = torch.Generator().manual_seed(1)
        data = {"mask": torch.sign(torch.rand(8, 1, SIZE, SIZE, generator=g) - 0.7),
                "image": torch.rand(8, 3, SIZE, SIZE, generator=g) * 2 - 1}  # fmt: skip
        losses = []
        for step in range(STEPS):
            torch.manual_seed(1000 + step * world + rank)  # the loop's per-rank dropout stream
            idx = torch.randperm(8, generator=torch.Generator().manual_seed(step))[:GLOBAL_BATCH][rank::world]
            idx = idx.flip(0) if reverse else idx  # the same images summed in another order: rounding only
            o = stage.train_step(models, opts, {k: v[idx] for k, v in data.items()}, gen, amp)
            losses.append([o["loss_d"], o["loss_g"]])
        torch.save({"losses": losses, "G": unwrap(models["G"]).state_dict()}, os.path.join(out, f"w{world}_r{rank}{'_rev' if reverse else ''}.pt"))
    finally:
        if world > 1:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path, overrides: dict) -> tuple[dict, list[dict]]:
    _worker(0, 1, 0, overrides, str(tmp_path))
    _worker(0, 1, 0, overrides, str(tmp_path), reverse=True)
    mp.spawn(_worker, args=(2, _free_port(), overrides, str(tmp_path)), nprocs=2, join=True)
    one = torch.load(tmp_path / "w1_r0.pt")
    one["rev"] = torch.load(tmp_path / "w1_r0_rev.pt")
    return one, [torch.load(tmp_path / f"w2_r{r}.pt") for r in range(2)]


def test_two_workers_match_one_at_the_same_global_batch(tmp_path):
    one, two = _run(tmp_path, INDEPENDENT)
    for step in range(STEPS):
        for j, name in enumerate(("loss_d", "loss_g")):
            mean2 = (two[0]["losses"][step][j] + two[1]["losses"][step][j]) / 2  # each rank: the mean over its half
            ref = one["losses"][step][j]
            assert abs(mean2 - ref) <= 1e-3 * abs(ref), (step, name, ref, mean2)
    # G's weights: Adam's first steps move a weight by ~lr whatever the size of its gradient, so weights whose
    # gradient is at rounding level land apart even between two 1-worker runs that only sum the batch in
    # another order; 2 workers must stay within twice that spread of 1 worker.
    keys = [k for k, v in one["G"].items() if v.is_floating_point()]

    def dist_to_one(run: dict) -> float:
        return float(torch.cat([(run["G"][k] - one["G"][k]).flatten() for k in keys]).norm())

    assert dist_to_one(two[0]) <= 2 * dist_to_one(one["rev"]) + 1e-6, (dist_to_one(two[0]), dist_to_one(one["rev"]))


def test_defaults_run_under_ddp_with_ranks_in_step(tmp_path):
    one, two = _run(tmp_path, {})
    for r in two:
        assert all(torch.isfinite(torch.tensor(x)).all() for x in r["losses"])
    for k, v in two[0]["G"].items():
        if v.is_floating_point() and "running" not in k:  # BatchNorm statistics are each rank's own
            assert torch.equal(v, two[1]["G"][k]), k
    assert two[0]["losses"] != two[1]["losses"]  # the ranks saw different shards


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
