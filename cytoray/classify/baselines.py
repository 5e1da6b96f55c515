"""The augmentation-baselines study (SynCGAN Tables 2 and 3, with uncertainty).

Rows are classifiers, columns are policies, cells are mean ± 95% CI over K seeded stratified
splits (× repeats); every policy is compared with `orig` over the same splits by a paired
test. Generators are trained once per split and reused by every policy and classifier; each
classifier's test split is scored once, by its best-on-validation epoch.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from ..config import ConfigError, DataConfig
from ..generators.config import CGANConfig, GeneratorTrainConfig, LatentGANConfig, MasksConfig, RunConfig
from ..generators.cyclegan import CycleGANConfig, DomainPair, TranslationConfig
from ..generators.nst import NSTConfig
from .config import ClassifierConfig

DEFAULT_POLICIES = ["orig", "trad", "syncgan", "trad+syncgan", "syncgan-only", "gan", "orig+gan"]


@dataclasses.dataclass
class BaselinesConfig:
    name: str = "augmentation_baselines"  # MLflow experiment and output folder name
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(n_splits=3))
    masks: MasksConfig = dataclasses.field(default_factory=MasksConfig)
    cgan: CGANConfig = dataclasses.field(default_factory=lambda: CGANConfig(epochs=15))
    mask_gan: LatentGANConfig = dataclasses.field(default_factory=lambda: LatentGANConfig(epochs=30))
    gan: LatentGANConfig = dataclasses.field(default_factory=lambda: LatentGANConfig(epochs=30, z_dim=128))
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(cpus_per_worker=2))
    classifier: ClassifierConfig = dataclasses.field(default_factory=lambda: ClassifierConfig(epochs=15))
    classifiers: list[str] = dataclasses.field(default_factory=lambda: ["resnet18"])
    policies: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_POLICIES))
    ratio: float = 2.0  # synthetic:real per class (paper: 90 synthetic beside 45 real)
    repeats: int = 1  # classifier seeds per split
    metric: str = "balanced_accuracy"  # the table's figure; accuracy, f1_macro, roc_auc also recorded
    # Translation policies (cyclegan, nst) turn histology of a class into cytology of that class:
    histology: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(sim_kind="histology", sim_seed=1))
    cyclegan: CycleGANConfig = dataclasses.field(default_factory=lambda: CycleGANConfig(epochs=15))
    nst: NSTConfig = dataclasses.field(default_factory=NSTConfig)

    def validate(self) -> None:
        if self.ratio < 0:
            raise ConfigError(f"ratio={self.ratio}: the synthetic:real ratio must be >= 0")
        if self.repeats < 1:
            raise ConfigError(f"repeats={self.repeats}: must be >= 1")
        if self.data.n_splits * self.repeats < 2:
            raise ConfigError(
                f"data.n_splits={self.data.n_splits} × repeats={self.repeats} gives one run per cell: no interval or paired "
                f"test is possible; set data.n_splits=3 (or repeats >= 2)"
            )
        if not self.policies or "orig" not in self.policies:
            raise ConfigError("policies: must include 'orig' (every policy is tested against it)")
        from ..metrics.classification import SCORES

        if self.metric not in SCORES:
            raise ConfigError(f"metric={self.metric!r}: one of {', '.join(SCORES)}")


def generator_config(cfg) -> GeneratorTrainConfig:
    """The generator-training part of a study config (studies share the generator keys)."""
    return GeneratorTrainConfig(data=cfg.data, masks=cfg.masks, cgan=cfg.cgan, mask_gan=cfg.mask_gan, gan=cfg.gan, run=cfg.run)


def check_before_training(cfg: BaselinesConfig) -> None:
    """Every rejectable choice, rejected before any job starts."""
    from .policies import parse_policy

    for p in cfg.policies:
        parse_policy(p)  # unknown names list the valid ones
    for name in cfg.classifiers:
        ccfg = dataclasses.replace(cfg.classifier, name=name)
        ccfg.validate()
        ccfg.check_size(cfg.data.size)


def run_baselines(cfg: BaselinesConfig, out: Path, tracking_uri: str | None = None, address: str | None = None) -> dict:
    """The whole study. Every check and the K splits come before Ray starts (or `address` is joined)."""
    import mlflow

    from ..config import to_dict
    from ..data.source import load_dataset
    from ..data.splits import repeated_manifests
    from ..distributed.runner import init_ray
    from ..generators import get_generator
    from ..io import write_json, write_text
    from ..metrics.classification import SCORES, classification_metrics, results_table, summarize
    from ..tracking.mlflow_utils import log_params_flat, setup
    from .policies import compose_training_set, generators_needed
    from .train import train_classifier

    # 1. Checks, data and the K splits (a split too small for K repeats fails here).
    check_before_training(cfg)
    ds = load_dataset(cfg.data, progress=True)
    manifests = repeated_manifests(ds, cfg.data.split_ratios, cfg.data.split_seed, cfg.data.n_splits, cfg.data.near_duplicate_bits)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    needed = sorted(generators_needed(cfg.policies))
    translators = [g for g in needed if getattr(get_generator(g), "needs_source_domain", False)]
    if translators:  # the histology domain, split the same way (same K seeds), same image size
        hcfg = dataclasses.replace(cfg.histology, size=cfg.data.size, n_splits=cfg.data.n_splits,
                                   split_ratios=cfg.data.split_ratios, split_seed=cfg.data.split_seed)  # fmt: skip
        hist = load_dataset(hcfg, progress=True)
        hmans = repeated_manifests(hist, hcfg.split_ratios, hcfg.split_seed, hcfg.n_splits, hcfg.near_duplicate_bits)
        tcfg = TranslationConfig(histology=hcfg, cytology=cfg.data, cyclegan=cfg.cyclegan, nst=cfg.nst, run=cfg.run)
    init_ray(address)
    uri = setup(cfg.name, tracking_uri)
    t0 = time.perf_counter()
    rows: list[dict] = []
    with mlflow.start_run(run_name=f"{cfg.name}-{manifests[0].hash}") as parent:
        log_params_flat(to_dict(cfg))
        for k, man in enumerate(manifests):
            man.save(out / f"split_{k}.json")
            train, val, test = (ds.subset(man.indices(s)) for s in ("train", "val", "test"))
            # 2. Generators once per split, reused by every policy and classifier.
            samplers = {}
            for g in needed:
                gen_cls, dest = get_generator(g), out / "generators" / f"split{k}" / g
                if g in translators:  # histology of class c → synthetic cytology labelled c
                    h = {s: hist.subset(hmans[k].indices(s)) for s in ("train", "val")}
                    bundle, _ = gen_cls.train(DomainPair(h["train"], train), DomainPair(h["val"], val), tcfg, dest, cache,
                                              f"{man.hash}:{hmans[k].hash}")  # fmt: skip
                else:
                    bundle, _ = gen_cls.train(train, val, generator_config(cfg), dest, cache, man.hash)
                samplers[g] = gen_cls.load(bundle)
            # 3. Every cell: compose, train (best on val), score test once.
            for clf in cfg.classifiers:
                ccfg = dataclasses.replace(cfg.classifier, name=clf)
                for policy in cfg.policies:
                    for r in range(cfg.repeats):
                        tr = compose_training_set(policy, train, cfg.ratio, samplers, rng_seed=1000 * k + r, augment=ccfg.augment)
                        res = train_classifier(tr, val, test, ccfg, label=f"{clf}-{policy.replace('+', '_')}-s{k}-r{r}",
                                               cache_root=cache, data_key=man.hash, run_cfg=cfg.run, seed=r)  # fmt: skip
                        m = classification_metrics(res.test_labels, res.test_prob)
                        row = {"classifier": clf, "policy": policy, "split": k, "repeat": r, "best_epoch": res.best_epoch,
                               **{f"val_{a}": b for a, b in res.val_metrics.items()},
                               **{a: m[a] for a in SCORES}}  # fmt: skip
                        rows.append(row)
                        with mlflow.start_run(run_name=f"{clf}|{policy}|split{k}|r{r}", nested=True):
                            mlflow.set_tags({"classifier": clf, "policy": policy, "split": k, "repeat": r, "split_hash": man.hash})
                            log_params_flat(res.params)
                            mlflow.log_metrics({f"test_{a}": float(row[a]) for a in SCORES})
                            mlflow.log_metrics({a: float(v) for a, v in row.items() if a.startswith("val_")})
                        print(f"[study] split {k} {clf:<10} {policy:<14} test {cfg.metric} {row[cfg.metric]:.3f} "
                              f"(best epoch {res.best_epoch}, {time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)  # fmt: skip
        # 4. Table with intervals and paired tests; Markdown, CSV, JSON; MLflow artefacts.
        summary = summarize(rows, metric=cfg.metric, baseline="orig")
        md, csv_rows = results_table(summary, cfg.classifiers, cfg.policies, cfg.metric)
        header = (f"# {cfg.name}: test {cfg.metric} (%), mean ± 95% CI over {cfg.data.n_splits} splits × {cfg.repeats} repeats\n\n"
                  f"Data: {ds.source}; ratio {cfg.ratio:g} synthetic:real per class; paired t-tests vs orig (Holm).\n\n")  # fmt: skip
        write_text(out / "table.md", header + md + "\n")
        write_text(out / "table.csv", "\n".join(",".join(str(c) for c in r) for r in csv_rows) + "\n")
        write_json(out / "results.json", {"rows": rows, "summary": summary})
        for f in ("table.md", "table.csv", "results.json"):
            mlflow.log_artifact(str(out / f))
        mlflow.log_metric("study_seconds", time.perf_counter() - t0)
    return {"table": md, "rows": rows, "summary": summary, "uri": uri, "parent_run_id": parent.info.run_id, "seconds": time.perf_counter() - t0}
