"""Which generator settings and synthetic:real ratio help a classifier most (and the stabiliser
study: which settings give the most faithful generator, by FID/KID alone).

A trial trains (or reuses, via the bundle and stage caches) its generator, measures FID/KID of
its samples against the VALIDATION split, composes the training set at its ratio and trains a
classifier whose per-epoch validation metrics stream to Tune (ASHA stops weak trials). The
test split is touched once, at the end, for the best configuration only. Any registered
generator can feed it; one that translates a source domain (CycleGAN, NST) gets the `source`
folder split the same way.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Literal

from ..classify.config import ClassifierConfig
from ..classify.filter import FilterConfig
from ..config import ConfigError, DataConfig, flatten, to_dict
from ..data.folder import ImageSet
from ..generators.base import GeneratorConfig, get_generator
from ..generators.domains import MIN_PER_CLASS, DomainPair, check_min_per_class, source_field
from ..generators.gan import CGANConfig, LatentGANConfig
from ..generators.syncgan import SynCGANConfig
from ..io import write_json, write_text
from ..metrics import names
from ..tracking.run_info import with_run_info
from ..tracking.study_logger import FIGURES, HISTORY, KIND_TAG
from ..training.config import RunConfig
from .common import (
    FID_ALL,
    epoch_report_callback,
    fidelity,
    filtered_sampler,
    memorisation_flag,
    real_by_class,
    register_best,
    train_generator,
    write_filter_grids,
)
from .driver import Study, StudyContext, TuneSettings, finished, point_of

# tune.search_space's default: the study's generator's own (Generator.default_search)
OWN_SPACE = "generator"


@dataclasses.dataclass
class RatioStudyConfig:
    # MLflow experiment, Ray Tune experiment and output folder name; null = <generator>_ratio
    name: str | None = None
    generator: GeneratorConfig = dataclasses.field(
        default_factory=lambda: SynCGANConfig(
            cgan=CGANConfig(epochs=8, g_base=16, d_base=16, full_res=16),
            mask_gan=LatentGANConfig(epochs=10, g_base=16, d_base=16),
        )
    )
    # training-set policy; null = real + the study's generator (orig+<generator>)
    policy: str | None = None
    ratio: float = 2.0  # synthetic:real per class (searched)
    fid_per_class: int = 30  # synthetic images per class for validation FID/KID
    # flag (tag + warning) a generator whose memorised
    # share passes this in a class (metrics/realism.py)
    memorised_max: float = 0.2
    # register the best generator/classifier; champion moves only if it wins on validation
    register: bool = True
    # champions compete within one protocol only; null = this split (split:<hash>)
    registry_protocol: str | None = None
    # a run training any stage for fewer epochs (a smoke run) never takes the champion alias
    champion_min_epochs: int = 5
    # fidelity: FID/KID of images and masks only, no classifier
    objective: Literal["classifier", "fidelity"] = "classifier"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    source: DataConfig = source_field()  # a translator's source domain (generators/domains.py)
    min_per_class: int = MIN_PER_CLASS  # per class and domain, for a translator
    # one trial at a time (tune.max_concurrent) on both cores: its jobs and its own FID/KID
    run: RunConfig = dataclasses.field(
        default_factory=lambda: RunConfig(checkpoint_every=10, cpus_per_worker=2)
    )
    classifier: ClassifierConfig = dataclasses.field(
        default_factory=lambda: ClassifierConfig(name="smallcnn", epochs=10)
    )
    # which synthetic images reach the classifier (classify/filter.py)
    filter: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    # generator: configs/search/<generator>_ratio.yaml
    tune: TuneSettings = dataclasses.field(
        default_factory=lambda: TuneSettings(search_space=OWN_SPACE, trial_cpu=0.0)
    )

    def __post_init__(self) -> None:
        """No name and the `generator` search space mean the generator's own: `--set generator.name=X` searches X."""
        gen = get_generator(self.generator.name)
        self.name = self.name or gen.study_name("ratio")
        if self.tune.search_space == OWN_SPACE:
            self.tune.search_space = gen.default_search("ratio")

    def validate(self) -> None:
        if self.ratio < 0:
            raise ConfigError(f"ratio={self.ratio}: must be >= 0")
        if self.objective == "fidelity" and self.tune.metric.startswith("val_"):
            raise ConfigError(
                f"objective=fidelity: tune.metric={self.tune.metric} "
                f"is a classifier metric; use {FID_ALL} (mode min)"
            )
        if self.fid_per_class < 2:
            raise ConfigError(
                f"fid_per_class={self.fid_per_class}: KID needs at least 2 images per class"
            )
        check_min_per_class(self.min_per_class)
        if not 0.0 <= self.memorised_max <= 1.0:
            raise ConfigError(f"memorised_max={self.memorised_max}: a share in [0, 1]")

    def policy_name(self) -> str:
        return self.policy or f"orig+{self.generator.name}"


@dataclasses.dataclass
class RatioSplit:
    """One seeded split: the classifier's real images, the generator's training and validation
    data (the same ImageSets, or DomainPairs for a translator), the split's key (its manifest hash,
    or both domains' for a translator) and its manifest files."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    gen_train: ImageSet | DomainPair
    gen_val: ImageSet | DomainPair
    key: str
    manifests: list[str]


@dataclasses.dataclass
class RatioData:
    """The study's splits: one, or `tune.splits` seeded ones (split 0 is the one-split study's)."""

    splits: list[RatioSplit]

    @property
    def key(self) -> str:
        return self.splits[0].key

    @property
    def manifests(self) -> list[str]:
        return [m for sp in self.splits for m in sp.manifests]


def load_study_data(cfg, out: Path) -> RatioData:
    """The real (target) splits and, for a translator, the paired source-domain splits: split 0 (the
    split a one-split study uses, in `split.json`), and with tune.splits = K all K (seeds
    data.split_seed .. +K-1; split j > 0 in `split_<j>.json` or `split_<j>/`)."""
    from ..data.source import load_dataset
    from ..errors import DataError

    k_splits = getattr(getattr(cfg, "tune", None), "splits", 1)
    translator = get_generator(cfg.generator.name).consumes == "domains"
    # loaded once for all K splits
    ds = None if translator else load_dataset(cfg.data, progress=True)
    splits = [_one_split(cfg, out, j, ds) for j in range(k_splits)]
    first: dict[str, int] = {}
    for j, sp in enumerate(splits):
        if sp.key in first:
            raise DataError(
                f"{splits[0].train.source}: split seeds {cfg.data.split_seed + first[sp.key]} "
                f"and {cfg.data.split_seed + j} give the same split; the data is too small "
                f"for tune.splits={k_splits} distinct splits; add images or lower tune.splits"
            )
        first[sp.key] = j
    for j, sp in enumerate(splits):
        tr, va, te = sp.train, sp.val, sp.test
        print(
            f"[study] {cfg.name}: split {j}: {tr.source} train {tr.counts()} "
            f"val {va.counts()} test {te.counts()} (split {sp.key})",
            file=sys.stderr,
        )
    return RatioData(splits)


def _one_split(cfg, out: Path, j: int, ds) -> RatioSplit:
    from ..data.source import load_split
    from ..generators.domains import domain_splits

    seed = cfg.data.split_seed + j
    if ds is None:  # a translator: both domains split with seed + j, manifests in their own folder
        where = out if j == 0 else out / f"split_{j}"
        where.mkdir(parents=True, exist_ok=True)
        pairs, key, paths = domain_splits(
            dataclasses.replace(cfg.data, split_seed=seed),
            dataclasses.replace(cfg.source, split_seed=cfg.source.split_seed + j),
            cfg.min_per_class,
            where,
        )
        train, val, test = (pairs[s].target for s in ("train", "val", "test"))
        gen_train, gen_val = pairs["train"], pairs["val"]
    else:
        path = out / ("split.json" if j == 0 else f"split_{j}.json")
        ds, man = load_split(dataclasses.replace(cfg.data, split_seed=seed), path, ds)
        train, val, test = (ds.subset(man.indices(s)) for s in ("train", "val", "test"))
        gen_train, gen_val, key, paths = train, val, man.hash, [path]
    return RatioSplit(train, val, test, gen_train, gen_val, key, [str(p) for p in paths])


class RatioStudy(Study):
    Config = RatioStudyConfig
    split_averaged = True  # tune.splits: K scores every trial on K splits (split_average.py)

    def check(self, cfg: RatioStudyConfig) -> None:
        from ..classify.policies import parse_policy

        pol = parse_policy(cfg.policy_name())
        extra = [g for g in pol.generators if g != cfg.generator.name]
        if extra or not pol.generators:
            raise ConfigError(
                f"policy={cfg.policy_name()!r} must draw from the study's generator "
                f"{cfg.generator.name!r} (and no other); e.g. orig+{cfg.generator.name}"
            )
        if cfg.objective == "classifier":
            cfg.classifier.check_size(cfg.data.size)
        # Every child run carries these from its creation (describe() below), so the MLflow run
        # table can be filtered and grouped by them even for a trial that failed before reporting.
        self.tags = {
            "generator": cfg.generator.name,
            "policy": cfg.policy_name(),
            "variant": cfg.policy_name(),
        }

    def prepare(self, cfg: RatioStudyConfig, out: Path) -> RatioData:
        return load_study_data(cfg, out)

    def objectives(self, cfg: RatioStudyConfig):
        t = cfg.tune
        return (
            ([FID_ALL, t.metric], ["min", t.mode]) if t.multi_objective else ([t.metric], [t.mode])
        )

    def asha_metric(self, cfg: RatioStudyConfig):
        """One split: the classifier's epochs. K splits: one report per scored split (the running mean),
        the grace period capped at K - 1 splits so that ASHA can stop a trial before its last split."""
        if cfg.objective != "classifier":
            return None
        k = cfg.tune.splits
        return (
            (cfg.tune.metric, cfg.tune.mode, cfg.classifier.epochs + 1)
            if k == 1
            else (cfg.tune.metric, cfg.tune.mode, k, max(1, min(cfg.tune.grace_period, k - 1)))
        )

    def describe(self, config: dict):
        flat = {k: v for k, v in flatten(config).items()}
        name = " ".join(
            f"{k.rsplit('.', 1)[-1]}={v:.3g}"
            if isinstance(v, float)
            else f"{k.rsplit('.', 1)[-1]}={v}"
            for k, v in flat.items()
        )
        return (
            name or "trial",
            {k: str(v)[:500] for k, v in flat.items()},
            dict(getattr(self, "tags", {})),
        )

    # -- the trial ----------------------------------------------------------------
    def trial(self, cfg: RatioStudyConfig, cell, data: RatioData, ctx: StudyContext) -> None:
        from ray import tune

        t0 = time.perf_counter()
        if cfg.tune.splits == 1:  # today's trial: one split, the classifier's epochs stream to ASHA
            tune.report(
                {
                    **self.score_split(cfg, data.splits[0], ctx, 0, stream=True),
                    names.FINAL: 1,
                    names.TRIAL_SECONDS: time.perf_counter() - t0,
                }
            )
            return
        from ..io import stable_hash
        from .split_average import score_splits
        from .tune_state import SplitResults

        tid = tune.get_context().get_trial_id() or "trial"
        store = SplitResults(ctx.out / "trial_splits" / f"{tid}.json", stable_hash(to_dict(cfg)))
        score_splits(
            data.splits,
            lambda j, sp: self.score_split(cfg, sp, ctx, j, stream=False),
            store,
            lambda r: tune.report({**r, names.TRIAL_SECONDS: time.perf_counter() - t0}),
        )

    def score_split(
        self, cfg: RatioStudyConfig, sp: RatioSplit, ctx: StudyContext, j: int, stream: bool
    ) -> dict:
        """(trial) The configuration on one split: generator, validation FID/KID, filtered synthetic
        images, classifier. `stream`: its epochs go to Tune as they come (one-split studies)."""
        from ..classify.train import train_classifier

        cache, t0 = ctx.cache, time.perf_counter()
        # 1. Generator for these settings (bundle and stage caches: shared by
        # every trial with the same ones and split).
        gen_cls = get_generator(cfg.generator.name)
        sampler, bundle, cached = train_generator(
            gen_cls,
            cfg.generator,
            sp.gen_train,
            sp.gen_val,
            sp.key,
            cache,
            cfg.run,
            ctx.use_cache,
        )
        gen_s = time.perf_counter() - t0
        # 2. Fidelity on validation (real features cached once per split
        # and class); every report carries it.
        # the mask generator scored too, if it has one
        masks = cfg.generator if cfg.objective == "fidelity" else None
        figures = trial_figures(
            ctx.out, sampler, sp.val, bundle, cfg, "" if j == 0 else f"split{j}"
        )
        fid = fidelity(
            sampler,
            sp.val,
            "val",
            cfg.fid_per_class,
            cfg.run.seed,
            cache / "features",
            sp.key,
            masks,
            train=sp.train,
            figures=Path(figures),
        )
        common = with_run_info(
            {
                names.GENERATOR_CACHED: int(cached),
                "generator_seconds": gen_s,
                "bundle": str(bundle),
                FIGURES: figures,
            },
            tags={
                **memorisation_flag(
                    fid, "val", cfg.memorised_max, f"generator {cfg.generator.name} ({figures})"
                ),
                "generator": cfg.generator.name,
                "policy": cfg.policy_name(),
                "variant": cfg.policy_name(),
            },
        )
        if cfg.objective == "fidelity":  # the stabiliser study: generators scored by FID/KID alone
            return {**fid, **common, "split_seconds": time.perf_counter() - t0}
        # 3. Classifier on real + (filtered) synthetic at the trial's ratio.
        tr, kept = training_set(cfg, sp, sampler, cache)
        filt = kept.stats() if kept is not None else {}
        if kept is not None:
            write_filter_grids(
                Path(figures),
                kept,
                f"{cfg.generator.name}, filter {cfg.filter.method} keep {cfg.filter.keep:g}",
            )
        callbacks = [epoch_report_callback({**fid, FIGURES: figures})] if stream else None
        res = train_classifier(
            tr,
            sp.val,
            None,
            cfg.classifier,
            label=f"clf-{cfg.classifier.name}",
            cache_root=cache,
            data_key=sp.key,
            run_cfg=cfg.run,
            seed=cfg.run.seed,
            use_cache=ctx.use_cache,
            callbacks=callbacks,
        )
        cas = (
            {f"cas_val_{k}": float(v) for k, v in res.val_metrics.items()}
            if synthetic_only(cfg.policy_name())
            else {}
        )
        return with_run_info(
            {
                **{f"val_{k}": float(v) for k, v in res.val_metrics.items()},
                **fid,
                **common,
                **cas,
                **filt,
                "epoch": len(res.history),
                "split_seconds": time.perf_counter() - t0,
                "classifier_dir": str(res.dir),
            },
            params={k: res.params[k] for k in ("weights", "weights_sha256") if k in res.params},
        )

    # -- the end ------------------------------------------------------------------
    def finish(
        self,
        cfg: RatioStudyConfig,
        best_cfg: RatioStudyConfig,
        data: RatioData,
        results,
        ctx: StudyContext,
    ) -> dict:
        import mlflow
        from mlflow import MlflowClient

        from ..tracking.study_logger import set_parent_summary

        out, cache = ctx.out, ctx.cache
        metric, mode = self.selection(cfg)
        done = finished(results, cfg.name, out)
        best_row = done.sort_values(metric, ascending=mode == "min").iloc[0]
        gen_cls = get_generator(best_cfg.generator.name)
        per_split, bundle, clf_bundle = [], None, None
        for j, sp in enumerate(
            data.splits
        ):  # one split, or each of tune.splits: test split once each
            sampler, gb, _ = train_generator(
                gen_cls,
                best_cfg.generator,
                sp.gen_train,
                sp.gen_val,
                sp.key,
                cache,
                best_cfg.run,
            )
            if (
                cfg.objective == "classifier"
            ):  # the chosen configuration's classifier (cache hit), test split once
                m, cb = final_test(best_cfg, sp, sampler, out, write_bundle=j == 0)
            else:  # fidelity: the chosen generator against the test split, once
                m, cb = (
                    fidelity(
                        sampler,
                        sp.test,
                        "test",
                        best_cfg.fid_per_class,
                        best_cfg.run.seed,
                        cache / "features",
                        sp.key,
                        best_cfg.generator,
                        train=sp.train,
                    ),
                    None,
                )
            per_split.append(m)
            # split 0's are registered
            bundle, clf_bundle = (gb, cb) if j == 0 else (bundle, clf_bundle)
        if len(per_split) == 1:
            test_metrics = per_split[0]
        else:  # the mean over splits, its SD and each split's value for every score
            from .split_average import combine

            test_metrics = combine(per_split, spread=lambda k: "/" not in k)
            test_metrics.pop(names.SPLITS_SCORED)
        table = trials_table(results, list(flatten(point_of(best_row))), metric, mode)
        write_text(out / "trials.md", table + "\n")
        write_json(
            out / "best.json",
            {
                "trial_id": best_row["trial_id"],
                "config": to_dict(best_cfg),
                "test": test_metrics,
                "split_hash": data.key,
                "bundle": str(bundle),
            },
        )
        mlflow.log_metrics(
            {f"best_test_{k}": float(v) for k, v in test_metrics.items() if isinstance(v, float)}
        )
        mlflow.log_metric(f"best_{metric}", float(best_row[metric]))
        if cfg.objective == "classifier" and synthetic_only(
            cfg.policy_name()
        ):  # CAS: trained on synthetic only, tested on real
            mlflow.log_metrics({f"cas_test_{k}": float(v) for k, v in test_metrics.items()})
        mlflow.set_tag("cytoray.best_trial", best_row["trial_id"])
        set_parent_summary(
            MlflowClient(),
            ctx.parent,
            {KIND_TAG: "stabilisers" if cfg.objective == "fidelity" else "ratio", **self.tags},
            summary_text(cfg, done, best_row, metric, test_metrics),
        )
        for f in [out / "trials.md", out / "best.json", *map(Path, data.manifests)]:
            mlflow.log_artifact(str(f))
        val = {k: float(best_row[k]) for k in (metric, FID_ALL) if k in best_row}
        promoted = (
            register_chosen(
                best_cfg,
                bundle,
                clf_bundle,
                val,
                test_metrics,
                data.key,
                ctx.smoke,
            )
            if cfg.register
            else {}
        )
        return {
            "table": table,
            "test": test_metrics,
            "best": best_row.to_dict(),
            "registered": promoted,
        }


def synthetic_only(policy: str) -> bool:
    """A policy with one generator and no real images (`<generator>-only`): its classifier's score
    on real images is the generator's classification accuracy score (CAS)."""
    from ..classify.policies import parse_policy

    p = parse_policy(policy)
    return not p.real and not p.trad and len(p.generators) == 1


def trial_figures(
    out: Path, sampler, val, bundle: Path, cfg: RatioStudyConfig, sub: str = ""
) -> str:
    """(trial) Real vs synthetic images per class and the generator's per-stage history, in
    `<out>/figures/<trial id>/` (split j > 0: in `split<j>/` below it); the MLflow callback logs
    the top folder's to the trial's child run."""
    import shutil

    from ray import tune

    from ..report.grids import write_real_vs_synthetic

    tid = tune.get_context().get_trial_id() or "trial"
    d = out / FIGURES / tid / sub if sub else out / FIGURES / tid
    real = real_by_class(val)
    synth = {
        c: sampler.sample(8, c, seed=cfg.run.seed + 1) for c in real
    }  # a seed apart from the FID samples'
    write_real_vs_synthetic(d, real, synth, f"{cfg.generator.name}, trial {tid}")
    if (Path(bundle) / "history.json").is_file():  # per-stage epochs, when the bundle records them
        shutil.copy2(Path(bundle) / "history.json", d / HISTORY)
    return str(d)


def summary_text(cfg: RatioStudyConfig, done, best_row, metric: str, test: dict) -> str:
    """The parent run's description: what was searched, what won (on validation), its test figures."""
    keys = [c[len("config/") :].replace("/", ".") for c in done if c.startswith("config/")]
    pooled = (
        names.FID_TEST,
        names.KID_TEST,
        names.fid("test", features=names.MASK),
    )
    head = {
        k: v for k, v in test.items() if "/" not in k or k in pooled
    }  # scores, or the pooled FID/KID
    return (
        f"**{cfg.name}**: {len(done)} finished trials of {cfg.policy_name()} "
        f"searching {', '.join(keys) or 'nothing'} (split protocol "
        f"{':'.join(f'{r:g}' for r in cfg.data.split_ratios)}, seed "
        f"{cfg.data.split_seed}, {splits_text(cfg)}; selection on validation "
        f"{metric}).\n\nBest trial {best_row['trial_id']}: validation "
        f"{metric} {float(best_row[metric]):.4g}; test split, scored once: "
        + ", ".join(f"{k} {v:.4g}" for k, v in head.items() if isinstance(v, float))
        + ".\n\nReport: artefacts `report/report.html` (figures in `report/`)."
    )


def training_set(cfg: RatioStudyConfig, sp: RatioSplit, sampler, cache: Path):
    """The classifier's training set at the configuration's ratio and policy, the synthetic images
    through the filter (when `filter.method` is not none; against the split's real TRAINING
    features, cached under the same key as the realism figures). Returns (set, FilteredSampler|None)."""
    from ..classify.policies import compose_training_set

    kept = None
    if cfg.filter.active:
        kept = sampler = filtered_sampler(
            sampler, cfg.filter, sp.train, sp.key, cache, cfg.run.seed
        )
    tr = compose_training_set(
        cfg.policy_name(),
        sp.train,
        cfg.ratio,
        {cfg.generator.name: sampler},
        rng_seed=cfg.run.seed,
        augment=cfg.classifier.augment,
    )
    return tr, kept


def splits_text(cfg: RatioStudyConfig) -> str:
    k = cfg.tune.splits
    return (
        "one split"
        if k == 1
        else f"{k} splits (seeds {cfg.data.split_seed}..{cfg.data.split_seed + k - 1}), trials scored by their mean"
    )


def final_test(
    cfg: RatioStudyConfig, sp: RatioSplit, sampler, out: Path, write_bundle: bool = True
):
    """The chosen configuration's classifier (a cache hit) scored on the test split once."""
    from ..classify.bundle import write_classifier_bundle
    from ..classify.train import train_classifier
    from ..metrics.classification import SCORES, classification_metrics

    train = sp.train
    tr, _ = training_set(cfg, sp, sampler, out / "cache")
    res = train_classifier(
        tr,
        sp.val,
        sp.test,
        cfg.classifier,
        label=f"clf-{cfg.classifier.name}",
        cache_root=out / "cache",
        data_key=sp.key,
        run_cfg=cfg.run,
        seed=cfg.run.seed,
        use_cache=True,
    )
    m = classification_metrics(res.test_labels, res.test_prob, list(train.class_names))
    metrics = {k: float(m[k]) for k in SCORES}
    if not write_bundle:
        return metrics, None
    size = cfg.classifier.check_size(int(train.images.shape[1]))
    bundle = write_classifier_bundle(
        out / "best_classifier",
        res.model_state,
        name=cfg.classifier.name,
        class_names=train.class_names,
        input_size=size,
        params=res.params,
    )
    return metrics, bundle


def min_epochs(cfg: RatioStudyConfig) -> int:
    """The smallest epoch budget of any stage the best configuration trained."""
    from ..config import to_plain

    epochs = [v for k, v in flatten(to_plain(cfg.generator)).items() if k.endswith("epochs")]
    if cfg.objective == "classifier":
        epochs.append(cfg.classifier.epochs)
    return min(epochs) if epochs else cfg.champion_min_epochs


def register_chosen(
    cfg: RatioStudyConfig,
    gen_bundle: Path,
    clf_bundle: Path | None,
    val: dict,
    test: dict,
    split_hash: str,
    smoke: bool = False,
) -> dict:
    """Register the chosen generator (and classifier). The champion is decided on the validation
    figure that chose the trial; the test figures ride along as tags, never compared."""
    # A mean over K splits and one split's score are different
    # protocols: champions never compare across them.
    default = (
        f"split:{split_hash}" if cfg.tune.splits == 1 else f"splits{cfg.tune.splits}:{split_hash}"
    )
    name = cfg.generator.name
    if clf_bundle is None:  # fidelity study: the generator, by validation FID (lower is better)
        metric, higher, models = FID_ALL, False, [(name, gen_bundle, "generator")]
    else:
        metric, higher = cfg.tune.metric, cfg.tune.mode == "max"
        models = [(name, gen_bundle, "generator"), (f"{name}-classifier", clf_bundle, "classifier")]
    return register_best(
        models,
        score=val[metric],
        protocol=cfg.registry_protocol or default,
        metric=metric,
        higher_is_better=higher,
        recorded=test,
        smoke=smoke,
        budget=min_epochs(cfg),
        min_epochs=cfg.champion_min_epochs,
    )


def trials_table(df, keys: list[str], metric: str, mode: str) -> str:
    """Every trial, best first; a trial ASHA stopped shows its last validation figure and epoch."""
    shown = list(
        dict.fromkeys(
            m
            for m in (
                metric,
                f"{metric}_sd",
                FID_ALL,
                names.MASK_FID_VAL,
                "filter_rejected_share",
            )
            if m in df
        )
    )
    cols = ["trial_id", "status", *keys, *shown, names.GENERATOR_CACHED, names.TRIAL_SECONDS]
    df = df.assign(status=[status(r) for _, r in df.iterrows()])
    rows = df.sort_values(metric, ascending=mode == "min")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in rows.iterrows():
        vals = (
            [r["trial_id"], r["status"]]
            + [r.get(f"config/{k.replace('.', '/')}") for k in keys]
            + [r.get(m) for m in shown]
        )
        vals += [r.get(names.GENERATOR_CACHED), r.get(names.TRIAL_SECONDS)]
        lines.append(
            "| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in vals) + " |"
        )
    return "\n".join(lines)


def status(r) -> str:
    """A trial's row status: finished, or where ASHA (or a failure) stopped it."""
    if r.get(names.FINAL) == 1:
        return "finished"
    total = r.get("splits_total")
    if (
        isinstance(total, (int, float)) and total == total and total > 1
    ):  # split-averaged (NaN: a one-split trial's row)
        return f"stopped after {int(r.get('splits_scored', 0))} of {int(r['splits_total'])} splits"
    return f"stopped at epoch {int(r.get('epoch', 0)) + 1}"
