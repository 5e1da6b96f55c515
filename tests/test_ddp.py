"""DDP for every stage kind on the CPU: 2 workers at the same global batch as 1 worker.

The workers are plain torch.distributed processes (torch.multiprocessing, gloo on 127.0.0.1), not Ray
Train: they do what the loop does under Ray (`training/loop.py`: the same seed before `build`, DDP with
the stage's `ddp_kwargs` around every model that trains, modules nothing trains left bare, an equal
shard of each global batch per rank), without a Ray cluster's start-up in a unit test.

Two checks per stage kind (mask GAN, CGAN, vanilla GAN, CycleGAN, refined-sim, classifier, diffusion):

- **Equivalence** ("independent" settings): every sample's forward and every random draw independent of
  the others, so averaging two half-batch gradients is the whole-batch gradient. Two things make a
  stage's result depend on how its batch is split, and the test removes both:
  1. BatchNorm normalises over the rank's shard. The test builds the nets with a per-sample norm in its
     place (GroupNorm with one group): what is tested is the DDP wiring of the stage (D and G stepped
     alternately, D run twice before one backward, modules without gradients, buffers not broadcast),
     not BatchNorm's statistics, which differ with the shard by definition (see below).
  2. Random draws (z, label smoothing, augmentation, noise levels) come from each rank's own generator.
     The test gives every rank one shared generator and draws each per-sample tensor for the whole
     global batch, keeping the rank's rows (`WorldDraws`): the draws 1 worker makes, sharded as the
     batch is. Draws that are not per sample (one flip for a batch) are the same on every rank.
  Stage settings that mix samples are turned off: dropout, D's history pools (their refill depends on
  the shard size), the refined-sim example weights (normalised over the shard).
  Each step's losses, averaged over the ranks, must agree with 1 worker within 1e-3 relative, and the
  kept model's weights after 3 Adam steps must lie no further from 1 worker's than twice the distance
  between two 1-worker runs that sum each batch in another order, plus 1e-4 of the distance training
  moved them (Adam moves a weight by ~lr whatever the size of its gradient, so rounding-level
  gradients land apart even then).
- **Defaults**: the stage as shipped (BatchNorm, dropout, augmentation, EMA, per-rank draws) runs under
  DDP, its losses are finite, the ranks saw different shards, and DDP keeps the trained weights
  identical on both ranks (BatchNorm's running statistics are each rank's own).

BatchNorm under DDP is not synchronised: torch's SyncBatchNorm runs on GPUs only (on the CPU its forward
raises), and each rank normalising over its own shard is the "ghost batch" regime, a per-rank batch of
batch_size / workers (8 at the shipped batch 16 on 2 workers): set `batch_size` per rank accordingly.
The running statistics that eval mode uses are rank 0's, which is what its checkpoint holds.

A third check: the checkpoint rank 0 saves (bare modules, optimisers, the generator state, as the loop
does) resumes in a 1-worker job that continues exactly as a 1-worker run that never stopped.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from cytoray.training.stage import amp_context, unwrap

CPU, SIZE, GLOBAL_BATCH, N, STEPS = torch.device("cpu"), 32, 4, 8, 3
KINDS = ("mask_gan", "cgan", "gan", "cyclegan", "refined_sim", "classifier", "diffusion")


def _known(cls, **kw) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {
        k: v for k, v in kw.items() if k in names
    }  # configs without the small-data keys still run


def _pm1(g: torch.Generator, *shape) -> torch.Tensor:
    return torch.rand(*shape, generator=g) * 2 - 1


def make_case(kind: str, world: int, independent: bool):
    """The stage at tiny sizes, its training arrays (N images), and the names of its kept model(s)."""
    g, bs = torch.Generator().manual_seed(1), GLOBAL_BATCH // world
    if kind in ("mask_gan", "gan"):
        from cytoray.generators.gan import (
            LatentGANConfig,
            MaskGANStage,
            VanillaGANStage,
            stage_params,
        )

        off = (
            {"augment": "none", "diffaug": "", "ema": 0.0, "ada": 0.0, "flip_rate": 0.0}
            if independent
            else {}
        )
        cfg = LatentGANConfig(
            **_known(LatentGANConfig, g_base=4, d_base=4, z_dim=8, batch_size=bs, **off)
        )
        stage = (MaskGANStage if kind == "mask_gan" else VanillaGANStage)(stage_params(cfg, SIZE))
        x = (
            torch.sign(_pm1(g, N, 1, SIZE, SIZE) - 0.4)
            if kind == "mask_gan"
            else _pm1(g, N, 3, SIZE, SIZE)
        )
        return stage, {stage.input_key: x}, ("G",)
    if kind == "cgan":
        from cytoray.generators.gan import CGANConfig, CGANStage, stage_params

        off = (
            {"norm": "instance", "dropout": 0.0, "diffaug": "", "ema": 0.0, "ada": 0.0}
            if independent
            else {}
        )
        stage = CGANStage(
            stage_params(
                CGANConfig(**_known(CGANConfig, g_base=4, d_base=4, batch_size=bs, **off)), SIZE
            )
        )
        return (
            stage,
            {
                "mask": torch.sign(_pm1(g, N, 1, SIZE, SIZE) - 0.4),
                "image": _pm1(g, N, 3, SIZE, SIZE),
            },
            ("G",),
        )
    if kind == "cyclegan":
        from cytoray.generators.cyclegan import CycleGANConfig, CycleGANStage, stage_params

        off = (
            {"pool_size": 0, "diffaug": "", "ema": 0.0}
            if independent
            else {"diffaug": "translation,cutout", "ema": 0.99}
        )
        cfg = CycleGANConfig(
            **_known(CycleGANConfig, g_base=4, d_base=4, n_blocks=1, batch_size=bs, **off)
        )
        return (
            CycleGANStage(stage_params(cfg, SIZE, N)),
            {"A": _pm1(g, N, 3, SIZE, SIZE), "B": _pm1(g, N, 3, SIZE, SIZE)},
            ("G", "F"),
        )
    if kind == "refined_sim":
        from cytoray.config import to_plain
        from cytoray.generators.refined_sim import RefinedSimConfig
        from cytoray.generators.refined_stage import RefinedSimStage

        cfg = RefinedSimConfig(patch=SIZE, batch_size=bs, pool=2 * N)
        cfg.refiner.width, cfg.refiner.d_base, cfg.refiner.style_base, cfg.segmenter.base = (
            4,
            4,
            4,
            4,
        )
        if independent:
            cfg.refiner.history, cfg.segmenter.example_weights = 0, False
        stage = RefinedSimStage({**to_plain(cfg), "size": SIZE})
        stage._epoch = next(
            e for e in range(stage.epochs) if stage.phase(e) == "joint"
        )  # R, D and S all step
        data = {
            "init": _pm1(g, N, 3, SIZE, SIZE),
            "mask": (torch.rand(N, 1, SIZE, SIZE, generator=g) < 0.2).float(),
            "real": _pm1(g, N, 3, SIZE, SIZE),
            "style": _pm1(g, N, 3, SIZE, SIZE),
        }
        return stage, data, ("R", "S")
    if kind == "classifier":
        from cytoray.classify.config import ClassifierConfig
        from cytoray.classify.train import ClassifierStage

        cfg = ClassifierConfig(
            **_known(
                ClassifierConfig, name="smallcnn", batch_size=bs, online_augment=not independent
            )
        )
        stage = ClassifierStage(
            {"classifier": dataclasses.asdict(cfg), "input_size": SIZE, "num_classes": 2}
        )
        return (
            stage,
            {"x": torch.rand(N, 3, SIZE, SIZE, generator=g), "y": torch.arange(N) % 2},
            ("net",),
        )
    if kind == "diffusion":
        from cytoray.generators.diffusion import DenoiserConfig, DenoiserStage
        from cytoray.generators.gan import stage_params

        cfg = DenoiserConfig(
            batch_size=bs,
            channels=[8, 16],
            attention=[False, True],
            norm_groups=4,
            head_channels=8,
            timesteps=50,
        )
        stage = DenoiserStage({**stage_params(cfg, SIZE), "labels": 3, "classes": 2})
        data = {
            "image": _pm1(g, N, 3, SIZE, SIZE),
            "labels": torch.randint(0, 3, (N, SIZE, SIZE), generator=g),
            "cls": torch.arange(N) % 2,
        }
        return stage, data, ("G",)
    raise ValueError(kind)


class WorldDraws:
    """Per-sample random draws that do not depend on the number of workers.

    While installed, a `torch.rand/randn/randint/randperm` call given the shared generator draws the
    whole global batch (`local` rows x `world`) and returns this rank's rows, `rank::world`, the rows of
    its shard; a draw that is not per sample is drawn whole, alike on every rank. `reverse` flips the
    rows, matching a batch summed in the reverse order."""

    def __init__(self, gen: torch.Generator, rank: int, world: int, reverse: bool = False) -> None:
        self.gen, self.rank, self.world, self.reverse, self.local = gen, rank, world, reverse, 0
        self.orig = {k: getattr(torch, k) for k in ("rand", "randn", "randint", "randperm")}
        for k in self.orig:
            setattr(torch, k, self._wrap(k))

    def _wrap(self, name: str):
        fn = self.orig[name]

        def draw(*args, generator=None, **kw):
            if generator is not self.gen:
                return fn(*args, generator=generator, **kw)
            if (
                name == "randperm"
            ):  # a permutation of the rank's rows: the rank's slice of a global one, ranked
                full = fn(args[0] * self.world, generator=generator, **kw)
                return torch.argsort(full[self.rank :: self.world])
            head, size = (
                (args[:-1], args[-1])
                if name == "randint"
                else ((), args[0] if len(args) == 1 and not isinstance(args[0], int) else args)
            )
            size = tuple(size)
            if not size or size[0] != self.local:
                return fn(*head, size, generator=generator, **kw)
            out = fn(*head, (size[0] * self.world, *size[1:]), generator=generator, **kw)[
                self.rank :: self.world
            ]
            return out.flip(0) if self.reverse else out

        return draw

    def remove(self) -> None:
        for k, f in self.orig.items():
            setattr(torch, k, f)


def _per_sample_norms() -> None:
    """BatchNorm2d built from here on is GroupNorm with one group: each sample normalised on its own;
    Dropout built from here on is the identity (its mask comes from each rank's global stream, and nets
    such as the SmallCNN classifier build it with no setting to turn it off)."""
    nn.BatchNorm2d = lambda c, *a, **k: nn.GroupNorm(1, c)  # type: ignore[assignment,misc]
    nn.Dropout = lambda *a, **k: nn.Identity()  # type: ignore[assignment,misc]


def _worker(
    rank: int,
    world: int,
    port: int,
    kind: str,
    independent: bool,
    out: str,
    reverse: bool = False,
    steps: tuple[int, int] = (0, STEPS),
    resume: str | None = None,
    save: str | None = None,
) -> None:
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    draws = None
    try:
        if independent:
            _per_sample_norms()
        stage, data, kept = make_case(kind, world, independent)
        torch.manual_seed(0)  # the loop: the same initial weights on every rank
        models = stage.build(CPU)
        opts = stage.optimizers(models)
        gen = torch.Generator().manual_seed(7) if independent else stage.rng(CPU, 0, rank)
        if resume:
            state = torch.load(resume)
            for k, m in models.items():
                m.load_state_dict(state["models"][k])
            for k, o in opts.items():
                o.load_state_dict(state["opts"][k])
            gen.set_state(state["rng"])
        bare = models
        init = {f"{m}.{k}": v.clone() for m in kept for k, v in models[m].state_dict().items()}
        if world > 1:
            ddp = torch.nn.parallel.DistributedDataParallel
            models = {
                k: ddp(m, **stage.ddp_kwargs) if any(q.requires_grad for q in m.parameters()) else m
                for k, m in models.items()
            }
        draws = WorldDraws(gen, rank, world, reverse) if independent else None
        amp, losses = amp_context(CPU, False), []
        for step in range(*steps):
            torch.manual_seed(1000 + step * world + rank)  # the loop's per-rank dropout stream
            idx = torch.randperm(N, generator=torch.Generator().manual_seed(step))[:GLOBAL_BATCH][
                rank::world
            ]
            idx = (
                idx.flip(0) if reverse else idx
            )  # the same images summed in another order: rounding only
            if draws:
                draws.local = len(idx)
            o = stage.train_step(models, opts, {k: v[idx] for k, v in data.items()}, gen, amp)
            losses.append({k: float(v) for k, v in o.items()})
        if save and rank == 0:  # what the loop's rank-0 checkpoint holds
            torch.save(
                {
                    "models": {k: m.state_dict() for k, m in bare.items()},
                    "opts": {k: o.state_dict() for k, o in opts.items()},
                    "rng": gen.get_state(),
                },
                save,
            )
        weights = {f"{m}.{k}": v for m in kept for k, v in unwrap(models[m]).state_dict().items()}
        torch.save(
            {"losses": losses, "weights": weights, "init": init},
            os.path.join(out, f"w{world}_r{rank}{'_rev' if reverse else ''}.pt"),
        )
    finally:
        if draws:
            draws.remove()
        if world > 1:
            dist.destroy_process_group()


# Workers are forked from one server process that imported torch and the stages once (a fresh
# interpreter per worker spent ~7 s of each test importing them, ~20 s for the diffusion stage's
# libraries). Each worker is still its own process: the norm swap and the patched draws stay in it.
START = "forkserver"
mp.get_context(START).set_forkserver_preload(
    [
        "torch",
        "cytoray.generators.gan",
        "cytoray.generators.cyclegan",
        "cytoray.generators.refined_stage",
        "cytoray.classify.train",
        "cytoray.generators.diffusion",
    ]
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path, kind: str, independent: bool) -> tuple[dict, list[dict]]:
    """1 worker (twice: the second sums each batch in reverse), then 2 workers; processes of their own so
    the norm swap and the patched draws never reach the test process."""
    ctx = mp.get_context(START)
    for reverse in (False, True):
        p = ctx.Process(target=_worker, args=(0, 1, 0, kind, independent, str(tmp_path), reverse))
        p.start(), p.join()
        assert p.exitcode == 0, f"1-worker {kind} failed"
    mp.start_processes(
        _worker,
        args=(2, _free_port(), kind, independent, str(tmp_path)),
        nprocs=2,
        join=True,
        start_method=START,
    )
    one = torch.load(tmp_path / "w1_r0.pt")
    one["rev"] = torch.load(tmp_path / "w1_r0_rev.pt")
    return one, [torch.load(tmp_path / f"w2_r{r}.pt") for r in range(2)]


def _assert_same_losses(one: list[dict], two: list[list[dict]], tol: float = 1e-3) -> None:
    for step, ref in enumerate(one):
        for name, v in ref.items():
            mean2 = (
                two[0][step][name] + two[1][step][name]
            ) / 2  # each rank: the mean over its half
            assert abs(mean2 - v) <= tol * max(abs(v), 1e-6), (step, name, v, mean2)


def _dist(a: dict, b: dict) -> float:
    keys = [k for k, v in b.items() if v.is_floating_point()]
    return float(torch.cat([(a[k] - b[k]).flatten() for k in keys]).norm())


@pytest.mark.parametrize("kind", KINDS)
def test_two_workers_match_one_at_the_same_global_batch(tmp_path, kind):
    one, two = _run(tmp_path, kind, independent=True)
    _assert_same_losses(one["losses"], [t["losses"] for t in two])
    # kept weights: within twice the spread of two 1-worker runs that only sum in another order, plus
    # 1e-4 of the distance training moved them (Adam turns rounding-level gradients of a near-zero
    # weight into a step of ~lr: the reverse-order pair samples that spread once, 2 workers once more)
    d_two, d_rev = (
        _dist(two[0]["weights"], one["weights"]),
        _dist(one["rev"]["weights"], one["weights"]),
    )
    moved = _dist(one["weights"], one["init"])
    print(f"{kind}: 2 workers {d_two:.2e} from 1, reverse order {d_rev:.2e}, moved {moved:.2e}")
    assert d_two <= 2 * d_rev + 1e-4 * moved, (kind, d_two, d_rev, moved)


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_run_under_ddp_with_ranks_in_step(tmp_path, kind):
    one, two = _run(tmp_path, kind, independent=False)
    for r in two:
        assert all(torch.isfinite(torch.tensor(list(x.values()))).all() for x in r["losses"]), kind
    for k, v in two[0]["weights"].items():
        if v.is_floating_point() and "running" not in k:  # BatchNorm statistics are each rank's own
            assert torch.equal(v, two[1]["weights"][k]), (kind, k)
    assert two[0]["losses"] != two[1]["losses"]  # the ranks saw different shards


@pytest.mark.parametrize("kind", ("cgan", "cyclegan"))
def test_rank0_checkpoint_resumes_in_a_one_worker_job(tmp_path, kind):
    """2 workers for 2 steps, rank 0's checkpoint, then 1 worker for step 3 = 1 worker for all 3 steps."""
    ctx = mp.get_context(START)
    p = ctx.Process(target=_worker, args=(0, 1, 0, kind, True, str(tmp_path)))
    p.start(), p.join()
    straight = torch.load(tmp_path / "w1_r0.pt")
    ckpt, two_dir, resumed_dir = tmp_path / "rank0.pt", tmp_path / "two", tmp_path / "resumed"
    two_dir.mkdir(), resumed_dir.mkdir()
    mp.start_processes(
        _worker,
        args=(2, _free_port(), kind, True, str(two_dir), False, (0, STEPS - 1), None, str(ckpt)),
        nprocs=2,
        join=True,
        start_method=START,
    )
    p = ctx.Process(
        target=_worker,
        args=(0, 1, 0, kind, True, str(resumed_dir), False, (STEPS - 1, STEPS), str(ckpt)),
    )
    p.start(), p.join()
    assert p.exitcode == 0
    resumed = torch.load(resumed_dir / "w1_r0.pt")
    _assert_same_losses(
        straight["losses"][-1:], [resumed["losses"], resumed["losses"]]
    )  # one worker: the mean of itself
    assert _dist(resumed["weights"], straight["weights"]) < 1e-3 * _dist(
        straight["weights"], {k: torch.zeros_like(v) for k, v in straight["weights"].items()}
    )


@pytest.mark.parametrize(
    "n,batch,workers,match",
    [
        (7, 4, 4, "7 training images on 4 worker.*each worker 1.*run.num_workers"),
        (16, 1, 2, "batch_size 1 is per worker.*batch_size >= 2"),
    ],
)
def test_a_stage_no_worker_can_step_on_is_refused_before_the_job_starts(
    tmp_path, monkeypatch, n, batch, workers, match
):
    """The loop skips batches under 2 (BatchNorm): a per-worker shard or batch under 2 would train
    nothing; it is refused before Ray is asked for anything, and nothing is written to the cache."""
    import cytoray.training.runner as runner
    from cytoray.errors import ConfigError

    def no_ray(*a, **k):
        raise AssertionError("the job was started")

    monkeypatch.setattr(runner, "init_ray", no_ray)
    from cytoray.generators.gan import CGANConfig, CGANStage, stage_params
    from cytoray.training.config import RunConfig
    from cytoray.training.runner import run_stages
    from cytoray.training.stage import StageSpec

    g = torch.Generator().manual_seed(0)
    stage = CGANStage(stage_params(CGANConfig(g_base=4, d_base=4, batch_size=batch), SIZE))
    spec = StageSpec(
        "cgan",
        stage,
        {
            "mask": torch.sign(_pm1(g, n, 1, SIZE, SIZE)).numpy(),
            "image": _pm1(g, n, 3, SIZE, SIZE).numpy(),
        },
        None,
        {},
        "k",
    )
    with pytest.raises(ConfigError, match=match):
        run_stages(
            [spec],
            cache_root=tmp_path / "cache",
            run_cfg=RunConfig(num_workers=workers),
            use_cache=False,
        )
    assert not (tmp_path / "cache").exists()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
