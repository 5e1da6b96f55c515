"""Search studies: Ray Tune + Optuna over generator and mixing settings, one MLflow writer.

A trial is a driver function (Train V2 pattern): it trains (or reuses, via the stage cache)
the generator for its settings, measures FID/KID of its samples against the VALIDATION split,
composes the training set at its synthetic:real ratio, and trains a classifier whose
per-epoch validation metrics stream to Tune (ASHA stops weak trials). The test split is
touched once, at the end, for the best configuration only.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

import numpy as np


from ..classify.baselines import generator_config
from ..classify.config import ClassifierConfig
from ..config import ConfigError, DataConfig, deep_merge, from_dict, parse_override, to_dict
from ..generators.config import CGANConfig, LatentGANConfig, MasksConfig, RunConfig
from ..io import stable_hash

FID_ALL = "fid_val_inception/all"


@dataclasses.dataclass
class TuneSettings:
    search_space: str = "configs/search/syncgan_ratio.yaml"  # YAML space; relative paths resolve from the repo root
    num_samples: int = 4  # trials the searcher proposes (CPU default: ~3 min a trial on 2 cores)
    max_concurrent: int = 1  # trials at once (each runs its own Ray Train jobs)
    seed: int = 0  # seeds the Optuna TPE sampler (same seed, same proposals)
    metric: str = "val_balanced_accuracy"  # selection metric, measured on validation only
    mode: Literal["max", "min"] = "max"
    multi_objective: bool = False  # also minimise fid_val_inception/all (Optuna NSGA/TPE multi-objective)
    asha: bool = True  # ASHA early stopping on the classifier's per-epoch validation metric
    grace_period: int = 3  # classifier epochs before ASHA may stop a trial
    reduction_factor: int = 2  # ASHA keeps the top 1/reduction_factor at each rung
    trial_cpu: float = 0.1  # the trial driver's own share; its Ray Train workers reserve their own

    def validate(self) -> None:
        if self.num_samples < 1 or self.max_concurrent < 1:
            raise ConfigError("tune.num_samples and tune.max_concurrent must be >= 1")


@dataclasses.dataclass
class RatioStudyConfig:
    name: str = "syncgan_ratio"  # MLflow experiment, Ray Tune experiment and output folder name
    generator: str = "syncgan"  # registered generator the trials train
    policy: str = "syncgan"  # training-set policy (real + synthetic)
    ratio: float = 2.0  # synthetic:real per class (searched)
    fid_per_class: int = 30  # synthetic images per class for validation FID/KID
    register: bool = True  # register the best generator/classifier; champion moves only if it wins
    objective: Literal["classifier", "fidelity"] = "classifier"  # fidelity: FID/KID of images and masks only, no classifier
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    masks: MasksConfig = dataclasses.field(default_factory=MasksConfig)
    cgan: CGANConfig = dataclasses.field(default_factory=lambda: CGANConfig(epochs=8, g_base=16, d_base=16))
    mask_gan: LatentGANConfig = dataclasses.field(default_factory=lambda: LatentGANConfig(epochs=10, g_base=16, d_base=16))
    gan: LatentGANConfig = dataclasses.field(default_factory=lambda: LatentGANConfig(epochs=10, z_dim=128, g_base=16, d_base=16))
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(checkpoint_every=10))
    classifier: ClassifierConfig = dataclasses.field(default_factory=lambda: ClassifierConfig(name="smallcnn", epochs=10))
    tune: TuneSettings = dataclasses.field(default_factory=TuneSettings)

    def validate(self) -> None:
        if self.ratio < 0:
            raise ConfigError(f"ratio={self.ratio}: must be >= 0")
        if self.objective == "fidelity" and self.tune.metric.startswith("val_"):
            raise ConfigError(f"objective=fidelity: tune.metric={self.tune.metric} is a classifier metric; use {FID_ALL} (mode min)")
        if self.fid_per_class < 2:
            raise ConfigError(f"fid_per_class={self.fid_per_class}: KID needs at least 2 images per class")


def apply_point(base: dict, overrides: list[str]) -> RatioStudyConfig:
    data = dict(base)
    for o in overrides:
        data = deep_merge(data, parse_override(o))
    return from_dict(RatioStudyConfig, data, "search point")


def generator_key(cfg: RatioStudyConfig) -> str:
    """What shapes the generator (not the ratio or classifier): the bundle folder's name."""
    g = generator_config(cfg)
    return stable_hash({"gen": cfg.generator, "masks": to_dict(g.masks), "cgan": to_dict(g.cgan),
                        "mask_gan": to_dict(g.mask_gan), "gan": to_dict(g.gan), "seed": g.run.seed})  # fmt: skip


# ----------------------------------------------------------------------------- the trial


def _rgb_masks(m: np.ndarray) -> np.ndarray:
    return np.repeat((m.astype(np.uint8) * 255)[..., None], 3, axis=-1)


def fidelity(sampler, ds, split: str, n: int, seed: int, feature_cache: Path, split_hash: str,
             masks_source: str | None = None) -> dict[str, float]:  # fmt: skip
    """FID/KID per class and overall: synthetic samples vs the real images of `split` (features
    of the real side cached once per split and class). With `masks_source`, the mask generator
    too: sampled masks vs the masks of the real images ("fid_<split>_mask_inception/...")."""
    from ..metrics.fidelity import cached_features, per_class

    real = {c: ds.images[ds.labels == i] for i, c in enumerate(ds.class_names)}
    samples = {c: sampler.sample(n, c, seed=seed) for c in ds.class_names}
    feats = {c: cached_features(x, f"{split_hash}:{split}:{c}", feature_cache) for c, x in real.items()}
    out = per_class(real, {c: s[0] for c, s in samples.items()}, split=split, real_features=feats)
    if masks_source and all(s[1] is not None for s in samples.values()):
        from ..generators.syncgan import nucleus_masks

        m = nucleus_masks(ds, masks_source)
        real_m = {c: _rgb_masks(m[ds.labels == i]) for i, c in enumerate(ds.class_names)}
        mf = {c: cached_features(x, f"{split_hash}:{split}:{c}:masks:{masks_source}", feature_cache) for c, x in real_m.items()}
        out.update(per_class(real_m, {c: _rgb_masks(s[1]) for c, s in samples.items()}, split=f"{split}_mask", real_features=mf))
    return out


def epoch_report_callback(extra: dict):
    """A Train→Tune callback whose every per-epoch report also carries `extra` (the trial's FID/KID).

    ASHA may stop a trial after any epoch; its last report is what the searcher is told.
    A multi-objective search (FID and the validation metric) needs both in that report.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    class _WithExtra(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            super().after_report(run_context, [{**extra, **metrics[0]}, *metrics[1:]], checkpoint)

    return _WithExtra()


def trial_fn(point: dict, *, base: dict, overrides_of, data: dict) -> None:
    """One Tune trial. `data` holds the train/val sets and paths (put once in the object store)."""
    from ray import tune

    from ..classify.policies import compose_training_set
    from ..classify.train import train_classifier
    from ..generators import get_generator

    cfg = apply_point(base, overrides_of(point))
    train, val, cache, split_hash = data["train"], data["val"], Path(data["cache"]), data["split_hash"]
    use_cache = data["use_cache"]
    t0 = time.perf_counter()
    # 1. Generator for these settings (stage cache: shared by every trial with the same ones).
    gen_cls = get_generator(cfg.generator)
    bundle, stages = gen_cls.train(train, val, generator_config(cfg), cache / "bundles" / f"{cfg.generator}-{generator_key(cfg)}",
                                   cache, split_hash, use_cache=use_cache)  # fmt: skip
    sampler = gen_cls.load(bundle)
    gen_s = time.perf_counter() - t0
    # 2. Fidelity on validation (real features cached once per split and class).
    masks = cfg.masks.source if cfg.objective == "fidelity" else None
    fid = fidelity(sampler, val, "val", cfg.fid_per_class, cfg.run.seed, cache / "features", split_hash, masks)
    fid = {k: float(v) for k, v in fid.items()}  # Tune reports and every per-epoch report carry these
    if cfg.objective == "fidelity":  # the stabiliser study: generators scored by FID/KID alone
        tune.report({**fid, "final": 1, "generator_cached": int(all(s.cached for s in stages.values())),
                     "generator_seconds": gen_s, "trial_seconds": time.perf_counter() - t0, "bundle": str(bundle)})  # fmt: skip
        return
    # 3. Classifier on real + synthetic at the trial's ratio; epochs stream to Tune (ASHA).
    tr = compose_training_set(cfg.policy, train, cfg.ratio, {cfg.generator: sampler}, rng_seed=cfg.run.seed, augment=cfg.classifier.augment)
    res = train_classifier(tr, val, None, cfg.classifier, label=f"clf-{cfg.classifier.name}", cache_root=cache,
                           data_key=split_hash, run_cfg=cfg.run, seed=cfg.run.seed, use_cache=use_cache,
                           callbacks=[epoch_report_callback(fid)])  # fmt: skip
    tune.report({
        **{f"val_{k}": float(v) for k, v in res.val_metrics.items()},
        **fid,
        "epoch": len(res.history), "final": 1, "generator_cached": int(all(s.cached for s in stages.values())),
        "generator_seconds": gen_s, "trial_seconds": time.perf_counter() - t0,
        "bundle": str(bundle), "classifier_dir": str(res.dir),
    })  # fmt: skip
