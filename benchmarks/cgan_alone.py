"""The CGAN alone on a real folder: how far its cells are from held-out real ones, per setting and seed.

    .venv/bin/python benchmarks/cgan_alone.py --cyto ../shared/data/herlev_dev --out /tmp/cgan_alone \
        --name g48 --set g_base=48 --set d_base=48 --seed 1

One split (seed 0, 64 px by default) of the folder; the stain label maps of the training cells
(SynCGAN's default masks); SynCGAN's CGAN stage (its defaults, with `--set key=value` over
`cgan.*`) trained for `--steps` steps in this process, no Ray (the stage's own `train_step`, batches
of `cgan.batch_size` in a seeded order); then 90 cells per class drawn as the shipped sampler draws
them (prior bank: a training map under a random warp, region colours from the class's cells) and
KID against the held-out cells (validation + test) on the real Inception weights. `--seed` sets the
weights' initialisation and the stage's noise stream: run several to see the training-seed spread.
`--white set` makes the label maps against the training cells' own white level (`masks.white`).
Appends one JSON line to OUT/results.jsonl and writes OUT/grid_<name>.png (rows per class: held-out
real, synthetic) and the synthetic cells, OUT/samples_<name>.npz. `--every N` adds a curve: the EMA
generator scored every N steps against the held-out cells and (`<class>_train`) against the
training cells, the only score a selection of snapshots or seeds may use. The CGAN trains under
`--arith` (default auto: bf16 autocast where the processor multiplies bf16 in hardware; the
figures in generators_real_herlev.md before 2026-12-07 are float32).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch


def main() -> None:
    from cytoray.masks.labels import WHITES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cyto", type=Path, required=True, help="real cytology folder <dir>/<class>/*.jpg"
    )
    ap.add_argument(
        "--out", type=Path, required=True, help="results folder (outside the repository)"
    )
    ap.add_argument(
        "--name", required=True, help="the run's name in results.jsonl and the grid's file"
    )
    ap.add_argument(
        "--set", action="append", default=[], help="cgan.KEY=VALUE over SynCGAN's defaults"
    )
    ap.add_argument(
        "--steps", type=int, default=240, help="optimiser steps (240 = the benchmark's 40 epochs)"
    )
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument(
        "--white",
        choices=WHITES,
        default="absolute",
        help="masks.white: the label maps' glass against 255 or the set's own white level",
    )
    ap.add_argument("--seed", type=int, default=0, help="initialisation and noise seed")
    ap.add_argument(
        "--lr-decay", action="store_true", help="lr linear to 0 over the second half of the steps"
    )
    ap.add_argument(
        "--every",
        type=int,
        default=0,
        help="also score the EMA generator every N steps, against the held-out cells and against "
        "the training cells (what a selection on training data could see); 0 = only at the end",
    )
    ap.add_argument(
        "--arith",
        choices=("auto", "fp32"),
        default="auto",
        help="auto: bf16 autocast where the CPU multiplies bf16 in hardware (run.cpu_bf16: auto)",
    )
    a = ap.parse_args()
    from generators_real import grid, held_out  # the generator benchmark's split and grid

    from cytoray.config import DataConfig
    from cytoray.data.source import load_split
    from cytoray.generators.gan import CGANStage, stage_params
    from cytoray.generators.map_prior import draw_from_bank
    from cytoray.generators.syncgan import (
        SynCGANConfig,
        condition,
        n_labels,
        priors,
        sampling_condition,
    )
    from cytoray.io import save_png
    from cytoray.masks.labels import region_colours
    from cytoray.masks.segmenter import pinned
    from cytoray.metrics.fidelity import fid_kid_from_features, inception_features
    from cytoray.nets.images import from_unit, to_unit
    from cytoray.training.stage import amp_context

    torch.set_num_threads(2)
    a.out.mkdir(parents=True, exist_ok=True)
    ds, man = load_split(
        DataConfig(root=str(a.cyto), size=a.size, split_seed=0), a.out / f"split{a.size}.json"
    )
    train = ds.subset(man.indices("train"))
    real = held_out(ds, man)  # the split's validation + test cells, per class
    cfg = SynCGANConfig()
    cfg.masks = dataclasses.replace(cfg.masks, white=a.white)
    # the training label maps, computed once per folder, size and white level
    cache = a.out / (
        f"maps{a.size}.npz" if a.white == "absolute" else f"maps{a.size}_{a.white}.npz"
    )
    if cache.is_file():
        m_train = np.load(cache)["m"]
    else:
        m_train = priors(train, pinned(cfg.masks))
        np.savez(cache, m=m_train)
    kw = {}
    for s in a.set:
        k, v = s.split("=", 1)
        cur = getattr(cfg.cgan, k)
        kw[k] = (v in ("1", "true")) if isinstance(cur, bool) else type(cur)(v)
    ccfg = dataclasses.replace(cfg.cgan, **kw)
    k = n_labels(cfg.masks)
    y, x = (
        torch.as_tensor(condition(train.images, m_train, k, ccfg)),
        torch.as_tensor(to_unit(train.images)),
    )
    stage = CGANStage({**stage_params(ccfg, a.size), "in_ch": int(y.shape[1])})
    torch.manual_seed(a.seed)
    models = stage.build("cpu")
    opts, gen = stage.optimizers(models), torch.Generator().manual_seed(a.seed)
    half = a.steps // 2
    sched = (
        [
            torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 - max(0, s - half) / (a.steps / 2 + 1))
            for o in opts.values()
        ]
        if a.lr_decay
        else []
    )
    amp = amp_context(torch.device("cpu"), True, a.arith)
    f_real = {c: inception_features(v) for c, v in real.items()}
    f_train = {
        c: inception_features(train.images[train.labels == i])
        for i, c in enumerate(train.class_names)
    }

    def score(G) -> tuple[dict, dict]:
        """KID of 90 cells per class drawn as the shipped sampler draws them (same maps and colours
        at every call), against the held-out cells and against the training cells."""
        res, fake = {}, {}
        for i, c in enumerate(train.class_names):
            rng = np.random.default_rng(1)
            torch.manual_seed(1)
            maps = m_train[train.labels == i]
            cols = region_colours(train.images[train.labels == i], maps).astype(np.float32)
            mm = draw_from_bank(maps, 90, rng, cfg.warp)
            cond = sampling_condition(mm, k, cols if ccfg.colours else None, rng)
            with torch.no_grad():
                imgs = np.concatenate(
                    [from_unit(G(torch.as_tensor(cond[j : j + 45]))) for j in range(0, 90, 45)]
                )
            f = inception_features(imgs)
            r = fid_kid_from_features(f, f_real[c], seed=0)
            res[c], res[f"{c}_sd"] = round(r["kid_mean"], 4), round(r["kid_std"], 4)
            res[f"{c}_train"] = round(fid_kid_from_features(f, f_train[c], seed=0)["kid_mean"], 4)
            fake[c] = imgs
        return res, fake

    curve, eval_s = [], 0.0
    t0, step, bs = time.time(), 0, ccfg.batch_size
    while step < a.steps:
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(step))
        for i in range(0, len(perm) - bs + 1, bs):
            b = perm[i : i + bs]
            out = stage.train_step(models, opts, {"mask": y[b], "image": x[b]}, gen, amp)
            for s in sched:
                s.step()
            step += 1
            if step % 60 == 0:
                print(
                    step,
                    {kk: round(v, 3) for kk, v in out.items()},
                    f"{time.time() - t0:.0f} s",
                    flush=True,
                )
            if a.every and step % a.every == 0 and step < a.steps:
                te, G = time.time(), stage.sampler(models)
                G.eval()
                r, _ = score(G)
                G.train()
                eval_s += time.time() - te
                curve.append({"step": step, **r})
                print("CURVE", json.dumps(curve[-1]), flush=True)
            if step >= a.steps:
                break
    res = {
        "name": a.name,
        "set": a.set,
        "steps": a.steps,
        "seed": a.seed,
        "train_s": round(time.time() - t0 - eval_s),
        "arith": a.arith,
    }
    G = stage.sampler(models).eval()
    r, fake = score(G)
    res.update(r)
    if curve:
        res["curve"] = curve + [{"step": step, **r}]
    save_png(a.out / f"grid_{a.name}.png", grid(real, fake, {}))
    np.savez_compressed(a.out / f"samples_{a.name}.npz", **fake)
    print("RESULT", json.dumps(res), flush=True)
    with open(a.out / "results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
