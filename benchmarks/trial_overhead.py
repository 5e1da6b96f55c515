"""Trial overhead: a default ratio-study trial under Tune + Ray Train vs the same stages in bare PyTorch.

    python benchmarks/trial_overhead.py [--set KEY=VALUE ...] [--before REV]

Side by side in one run: bare, trial, (trial at REV), bare again; the two bare runs are averaged
to cancel drift on a busy machine. Both sides do the same work from the same data and seed:
- bare: every stage of the generator (both class mask GANs, the CGAN) and then the classifier,
  each through its `Stage` in a plain PyTorch loop in this process (training steps, validation,
  best-epoch selection), sampling, real + synthetic Inception features and FID/KID on validation;
- trial: `studies/syncgan_ratio.py` with one trial (no ASHA, caches off) in a fresh process:
  Tune's trial process, its Ray Train jobs (the generator's, then the classifier's), reports,
  checkpoints, the stage cache writes. Its wall time is the trial's own `trial_seconds`; the
  whole study (start-up, split, MLflow, final test, registry) is printed beside it.
`--before REV` also runs the study of an earlier commit (a `git worktree`) for the before/after ratio.
Prints seconds and the ratios (target: trial ÷ bare <= 1.25).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_TRIAL = [
    "--set",
    "tune.num_samples=1",
    "--set",
    "tune.asha=false",
    "--set",
    "register=false",
    "--no-cache",
]


class Local:
    """A stage's result from the bare loop, shaped like a runner result for `Generator.assemble`."""

    def __init__(self, spec, best: dict) -> None:
        self.meta, self._best = {**spec.stage.meta(), "best_epoch": None}, best

    def best_state(self) -> dict:
        return self._best


def run_bare(spec, dev, amp) -> Local:
    """One stage in plain PyTorch: seeded build, epochs of shuffled batches, validation, best epoch."""
    import torch

    st = spec.stage
    train, val = st.prepare(spec.train, dev), st.prepare(spec.val, dev) or None
    torch.manual_seed(spec.seed)
    models = st.build(dev)
    opts, gen = st.optimizers(models), st.rng(dev, spec.seed, 0)
    best_key, best = None, None
    for epoch in range(st.epochs):
        order = st.order(train, epoch, spec.seed)
        for i in range(0, len(order), st.batch_size):
            idx = order[i : i + st.batch_size]
            if len(idx) >= 2:
                st.train_step(models, opts, {k: v[idx] for k, v in train.items()}, gen, amp)
        key = st.selection(st.validate(models, val, amp) or {}, epoch)
        if best_key is None or key < best_key:
            best_key, best = (
                key,
                {k: t.detach().clone() for k, t in models[st.keep].state_dict().items()},
            )
    return Local(spec, best)


def bare(sets: list[str]) -> float:
    """The trial's stages in plain PyTorch, in this process: seconds."""
    import dataclasses

    import torch

    from cytoray.bundle import write_bundle
    from cytoray.classify.policies import compose_training_set
    from cytoray.classify.train import ClassifierStage
    from cytoray.config import load
    from cytoray.data.source import load_split
    from cytoray.experiments.common import fidelity
    from cytoray.experiments.ratio import RatioStudyConfig
    from cytoray.generators.base import get_generator
    from cytoray.training.stage import StageSpec, amp_context

    cfg = load(RatioStudyConfig, ROOT / "configs/studies/syncgan_ratio.yaml", sets)
    torch.set_num_threads(cfg.run.cpus_per_worker)
    dev = torch.device("cpu")
    amp = amp_context(dev, False)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        # 1. The split, the generator's stages, its bundle.
        ds, man = load_split(cfg.data, Path(d) / "split.json")
        train, val = ds.subset(man.indices("train")), ds.subset(man.indices("val"))
        gen_cls = get_generator(cfg.generator.name)
        results = {
            s.label: run_bare(s, dev, amp)
            for s in gen_cls.stages(train, val, cfg.generator, man.hash, cfg.run.seed)
        }
        meta, weights, files = gen_cls.assemble(train, cfg.generator, results, man.hash)
        sampler = gen_cls.load(
            write_bundle(Path(d) / "bundle", {"generator": gen_cls.name, **meta}, weights, files)
        )
        # 2. Validation FID/KID, the training set at the ratio, the classifier.
        fidelity(
            sampler, val, "val", cfg.fid_per_class, cfg.run.seed, Path(d) / "features", man.hash
        )
        tr = compose_training_set(
            cfg.policy_name(),
            train,
            cfg.ratio,
            {gen_cls.name: sampler},
            rng_seed=cfg.run.seed,
            augment=cfg.classifier.augment,
        )
        size = cfg.classifier.check_size(int(tr.images.shape[1]))
        params = {
            "classifier": dataclasses.asdict(cfg.classifier),
            "input_size": size,
            "num_classes": len(tr.class_names),
        }
        spec = StageSpec(
            "clf",
            ClassifierStage(params),
            {"x": tr.images, "y": tr.labels},
            {"x": val.images, "y": val.labels},
            {},
            "k",
            cfg.run.seed,
        )
        run_bare(spec, dev, amp)
        return time.perf_counter() - t0


def trial(sets: list[str], root: Path) -> tuple[float, float]:
    """(the trial's own seconds, the whole one-trial study's seconds) of the study at `root`."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [
            sys.executable,
            str(root / "studies/syncgan_ratio.py"),
            "--out",
            f"{d}/study",
            "--tracking-uri",
            f"sqlite:///{d}/m.db",
            *ONE_TRIAL,
            *[x for s in sets for x in ("--set", s)],
        ]
        env = {**os.environ, "PYTHONPATH": str(root)}
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"study at {root} failed:\n{r.stderr[-3000:]}")
        res = [
            json.loads(line)
            for p in Path(d, "study", "tune").rglob("result.json")
            for line in p.read_text().splitlines()
        ]
        final = [x for x in res if x.get("final") == 1]
        return float(final[-1]["trial_seconds"]), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", action="append", default=[], help="study config override (both sides)")
    ap.add_argument(
        "--before",
        help="also time the study of this git revision (checked out in a temporary worktree)",
    )
    a = ap.parse_args()
    b1 = bare(a.set)
    print(f"bare PyTorch          : {b1:7.1f} s", flush=True)
    t_trial, t_study = trial(a.set, ROOT)
    print(
        f"trial (this checkout) : {t_trial:7.1f} s   (whole 1-trial study {t_study:.1f} s)",
        flush=True,
    )
    before = None
    if a.before:
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", d, a.before],
                check=True,
                capture_output=True,
            )
            try:
                old_sets = [
                    s.replace("generator.", "") for s in a.set
                ]  # the old config had the sections at the top
                before = trial(old_sets, Path(d))
            finally:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", d],
                    capture_output=True,
                )
        print(
            f"trial ({a.before[:10]})  : {before[0]:7.1f} s   (whole 1-trial study {before[1]:.1f} s)",
            flush=True,
        )
    b2 = bare(a.set)
    b = (b1 + b2) / 2
    print(f"bare PyTorch (again)  : {b2:7.1f} s   mean {b:.1f} s")
    print(
        f"overhead ratio trial/bare: {t_trial / b:.2f} (target <= 1.25); whole study/bare {t_study / b:.2f}"
    )
    if before:
        print(
            f"before ({a.before[:10]}) trial/bare: {before[0] / b:.2f}; whole study/bare {before[1] / b:.2f}; "
            f"after/before trial {t_trial / before[0]:.2f}"
        )


if __name__ == "__main__":
    main()
