"""The augmentation-baselines study (SynCGAN Tables 2 and 3, with uncertainty).

Rows are classifiers, columns are policies, cells are mean ± 95% CI over K seeded stratified
splits (× repeats); every policy is compared with `orig` over the same splits by a paired
test. Generators are trained once per split (before the cells) and reused by every policy
and classifier; each cell is one Tune trial (a grid, no search) that trains its classifier
and scores the test split once, by its best-on-validation epoch.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from ..classify.config import ClassifierConfig
from ..classify.filter import FilterConfig, split_filtered
from ..config import ConfigError, DataConfig, to_dict
from ..data.folder import ImageSet
from ..generators.base import GeneratorConfig, get_generator
from ..generators.domains import source_field
from ..generators.gan import CGANConfig, LatentGANConfig
from ..generators.syncgan import SynCGANConfig
from ..generators.vanilla import GANConfig
from ..io import write_json, write_text
from ..metrics import names
from ..tracking.run_info import with_run_info
from ..tracking.study_logger import FIGURES
from ..training.config import RunConfig
from .driver import Study, StudyContext, TuneSettings, finished

DEFAULT_POLICIES = ["orig", "trad", "syncgan", "trad+syncgan", "syncgan-only", "gan", "orig+gan"]


def _default_generators() -> dict[str, GeneratorConfig]:
    return {
        "syncgan": SynCGANConfig(cgan=CGANConfig(epochs=15), mask_gan=LatentGANConfig(epochs=30)),
        "gan": GANConfig(epochs=30),
    }


@dataclasses.dataclass
class BaselinesConfig:
    name: str = "augmentation_baselines"  # MLflow experiment and output folder name
    data: DataConfig = dataclasses.field(default_factory=lambda: DataConfig(n_splits=3))
    source: DataConfig = source_field()  # translators' histology (generators/domains.py)
    # a policy's generator not here: its defaults
    generators: dict[str, GeneratorConfig] = dataclasses.field(default_factory=_default_generators)
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(cpus_per_worker=2))
    classifier: ClassifierConfig = dataclasses.field(
        default_factory=lambda: ClassifierConfig(epochs=15)
    )
    classifiers: list[str] = dataclasses.field(default_factory=lambda: ["resnet18"])
    policies: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_POLICIES))
    ratio: float = 2.0  # synthetic:real per class (paper: 90 synthetic beside 45 real)
    # synthetic images per class for each generator's FID/KID against each split's test images
    fid_per_class: int = 30
    # flag (tag + warning) a generator whose memorised
    # share passes this in a class (metrics/realism.py)
    memorised_max: float = 0.2
    repeats: int = 1  # classifier seeds per split
    # the table's figure; accuracy, f1_macro, roc_auc also recorded
    metric: str = "balanced_accuracy"
    # the difference that matters (0.05 = 5 points): "no
    # effect" only when the paired 95% CI is inside ±effect
    effect: float = 0.05
    # intervals, tests and power: nadeau_bengio = the splits are random partitions of one set, so
    # their variance is 1/K + n_test/n_train (metrics/power.py); none = the plain t-test, only
    # right for independent test sets
    correction: str = "nadeau_bengio"
    # A policy named '<policy>-filtered' (e.g. syncgan-filtered,
    # trad+syncgan-filtered) draws its synthetic images through this filter
    # (classify/filter.py) against the split's real training images.
    filter: FilterConfig = dataclasses.field(
        default_factory=lambda: FilterConfig(method="realism", keep=0.5)
    )
    # cells: a grid, no search
    tune: TuneSettings = dataclasses.field(
        default_factory=lambda: TuneSettings(asha=False, trial_cpu=0.0)
    )

    def validate(self) -> None:
        if self.ratio < 0:
            raise ConfigError(f"ratio={self.ratio}: the synthetic:real ratio must be >= 0")
        if not 0.0 <= self.memorised_max <= 1.0:
            raise ConfigError(f"memorised_max={self.memorised_max}: a share in [0, 1]")
        if self.repeats < 1:
            raise ConfigError(f"repeats={self.repeats}: must be >= 1")
        if not 0.0 < self.effect < 1.0:
            raise ConfigError(
                f"effect={self.effect}: the difference that "
                "matters, a fraction in (0, 1) (0.05 = 5 points)"
            )
        from ..metrics.classification import CORRECTIONS

        if self.correction not in CORRECTIONS:
            raise ConfigError(
                f"correction={self.correction!r}: use nadeau_bengio (random splits of one set, "
                "the default) or none (the plain t-test, for independent test sets)"
            )
        if self.fid_per_class < 2:
            raise ConfigError(
                f"fid_per_class={self.fid_per_class}: KID needs at least 2 images per class"
            )
        if self.data.n_splits * self.repeats < 2:
            raise ConfigError(
                f"data.n_splits={self.data.n_splits} × repeats={self.repeats} "
                "gives one run per cell: no interval or paired test "
                "is possible; set data.n_splits=3 (or repeats >= 2)"
            )
        self.filter.validate()
        if any(split_filtered(p)[1] for p in self.policies) and not self.filter.active:
            raise ConfigError(
                "filter.method=none: a '-filtered' policy needs "
                "a filter (realism, centroid or classifier)"
            )
        if not self.policies or "orig" not in self.policies:
            raise ConfigError("policies: must include 'orig' (every policy is tested against it)")
        if self.tune.search_space:
            raise ConfigError(
                "tune.search_space: the baselines study runs a "
                "fixed grid of cells, not a search; set it to null"
            )
        from ..metrics.classification import SCORES

        if self.metric not in SCORES:
            raise ConfigError(f"metric={self.metric!r}: one of {', '.join(SCORES)}")

    def generator_config(self, name: str) -> GeneratorConfig:
        return self.generators.get(name) or get_generator(name).Config()


@dataclasses.dataclass
class BaselineSplit:
    """One of the `data.n_splits` seeded splits: the real images, its manifest hash, the histology
    domain split the same way (translators only), and what `setup` trained on it (per generator:
    the bundle folder, FID/KID against the split's test images, the figures folder)."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    hash: str
    hist: dict[str, ImageSet] | None = None
    hist_hash: str | None = None
    bundles: dict[str, str] = dataclasses.field(default_factory=dict)
    fid: dict[str, dict] = dataclasses.field(default_factory=dict)
    figures: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class BaselinesData:
    """The splits, the generators the policies draw on, and the data's source (for the tables)."""

    splits: list[BaselineSplit]
    needed: list[str]
    source: str


class BaselinesStudy(Study):
    Config = BaselinesConfig

    def check(self, cfg: BaselinesConfig) -> None:
        """Every rejectable choice, rejected before anything is written."""
        from ..classify.policies import parse_policy

        for p in cfg.policies:
            base, filtered = split_filtered(p)
            pol = parse_policy(base)  # unknown names list the valid ones
            if filtered and not pol.generators:
                raise ConfigError(
                    f"policy {p!r}: '-filtered' filters synthetic "
                    f"images, and {base!r} draws on no generator"
                )
        for name in cfg.classifiers:
            ccfg = dataclasses.replace(cfg.classifier, name=name)
            ccfg.validate()
            ccfg.check_size(cfg.data.size)

    def prepare(self, cfg: BaselinesConfig, out: Path) -> BaselinesData:
        from ..classify.policies import generators_needed
        from ..data.source import load_dataset
        from ..data.splits import repeated_manifests

        ds = load_dataset(cfg.data, progress=True)
        manifests = repeated_manifests(
            ds,
            cfg.data.split_ratios,
            cfg.data.split_seed,
            cfg.data.n_splits,
            cfg.data.near_duplicate_bits,
        )
        needed = sorted(generators_needed([split_filtered(p)[0] for p in cfg.policies]))
        translators = [g for g in needed if get_generator(g).consumes == "domains"]
        hist = hmans = None
        if translators:  # the histology domain, split the same way (same K seeds), same image size
            hcfg = dataclasses.replace(
                cfg.source,
                size=cfg.data.size,
                n_splits=cfg.data.n_splits,
                split_ratios=cfg.data.split_ratios,
                split_seed=cfg.data.split_seed,
            )
            hist = load_dataset(hcfg, progress=True)
            hmans = repeated_manifests(
                hist, hcfg.split_ratios, hcfg.split_seed, hcfg.n_splits, hcfg.near_duplicate_bits
            )
        splits = []
        for k, man in enumerate(manifests):
            man.save(out / f"split_{k}.json")
            train, val, test = (ds.subset(man.indices(s)) for s in ("train", "val", "test"))
            h = (
                None
                if hist is None
                else {s: hist.subset(hmans[k].indices(s)) for s in ("train", "val")}
            )
            splits.append(
                BaselineSplit(
                    train, val, test, man.hash, h, None if hmans is None else hmans[k].hash
                )
            )
        return BaselinesData(splits, needed, ds.source)

    def setup(self, cfg: BaselinesConfig, data: BaselinesData, ctx: StudyContext) -> None:
        """Generators once per split, reused by every policy and classifier (bundle paths go to the
        cells), each scored once by FID/KID against that split's test images (the cells of a policy
        that draws on it report the figure, so the MLflow UI compares policies on it too)."""
        from ..generators.domains import DomainPair
        from ..report.grids import write_real_vs_synthetic
        from .common import fidelity, memorisation_flag, real_by_class, train_generator

        cache = ctx.cache
        for k, sp in enumerate(data.splits):
            sp.bundles, sp.fid = {}, {}
            for g in data.needed:
                gen_cls, gcfg = get_generator(g), cfg.generator_config(g)
                if (
                    gen_cls.consumes == "domains"
                ):  # histology of class c → synthetic cytology labelled c
                    args = (
                        DomainPair(sp.hist["train"], sp.train),
                        DomainPair(sp.hist["val"], sp.val),
                        f"{sp.hash}:{sp.hist_hash}",
                    )
                else:
                    args = (sp.train, sp.val, sp.hash)
                sampler, bundle, _ = train_generator(
                    gen_cls, gcfg, *args, cache, cfg.run, ctx.use_cache
                )
                sp.bundles[g] = str(bundle)
                # What this generator adds on this split: the cells drawing on it show it
                # (in the UI's compare view), the parent run and the report show split 0's.
                real = real_by_class(sp.val)
                sp.figures[g] = str(ctx.out / "figures" / g / f"split{k}")
                sp.fid[g] = fidelity(
                    sampler,
                    sp.test,
                    "test",
                    cfg.fid_per_class,
                    cfg.run.seed,
                    cache / "features",
                    sp.hash,
                    train=sp.train,
                    figures=Path(sp.figures[g]),
                )
                flag = memorisation_flag(
                    sp.fid[g], "test", cfg.memorised_max, f"generator {g} (split {k})"
                )
                sp.fid[g].update(with_run_info(sp.fid[g], tags=flag))
                write_real_vs_synthetic(
                    Path(sp.figures[g]),
                    real,
                    {c: sampler.sample(8, c, seed=cfg.run.seed + 1) for c in real},
                    f"{g} (split {k})",
                )

    def grid(self, cfg: BaselinesConfig, data: BaselinesData) -> list[dict]:
        return [
            {"split": k, "classifier": c, "policy": p, "repeat": r}
            for k in range(len(data.splits))
            for c in cfg.classifiers
            for p in cfg.policies
            for r in range(cfg.repeats)
        ]

    def selection(self, cfg: BaselinesConfig):
        return f"test_{cfg.metric}", "max"

    def describe(self, config: dict):
        c = config["cell"]
        from ..classify.policies import parse_policy

        base, filtered = split_filtered(c["policy"])
        gens = parse_policy(base).generators
        tags = {
            "classifier": c["classifier"],
            "policy": c["policy"],
            "split": c["split"],
            "repeat": c["repeat"],
            "variant": c["policy"],
            "generator": "+".join(gens) or "none",
            **({"filter": "filtered"} if filtered else {}),
        }
        return (
            f"{c['classifier']}|{c['policy']}|split{c['split']}|r{c['repeat']}",
            {f"cell.{k}": v for k, v in c.items()},
            tags,
        )

    def trial(
        self, cfg: BaselinesConfig, cell: dict, data: BaselinesData, ctx: StudyContext
    ) -> None:
        from ray import tune

        from ..classify.policies import compose_training_set, parse_policy
        from ..classify.train import train_classifier
        from ..generators.base import load_bundle
        from ..metrics.classification import SCORES, classification_metrics

        k, clf, policy, r = cell["split"], cell["classifier"], cell["policy"], cell["repeat"]
        sp = data.splits[k]
        base, filtered = split_filtered(policy)
        pol = parse_policy(base)
        samplers = {g: load_bundle(sp.bundles[g]) for g in pol.generators}
        if filtered:
            samplers = filtered_samplers(cfg, sp, samplers, ctx.cache)
        ccfg = dataclasses.replace(cfg.classifier, name=clf)
        tr = compose_training_set(
            base, sp.train, cfg.ratio, samplers, rng_seed=1000 * k + r, augment=ccfg.augment
        )
        res = train_classifier(
            tr,
            sp.val,
            sp.test,
            ccfg,
            label=f"{clf}-{policy.replace('+', '_')}-s{k}-r{r}",
            cache_root=ctx.cache,
            data_key=sp.hash,
            run_cfg=cfg.run,
            seed=r,
            use_cache=ctx.use_cache,
        )
        m = classification_metrics(res.test_labels, res.test_prob)
        print(
            f"[study] split {k} {clf:<10} {policy:<14} test {cfg.metric} {m[cfg.metric]:.3f} "
            f"(best epoch {res.best_epoch}, {time.time() - ctx.t0:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        gens = pol.generators
        # the generator this cell drew on (before any filter), vs its test split
        fid = sp.fid[gens[0]] if len(gens) == 1 else {}
        if len(gens) == 1:
            fid = {**fid, FIGURES: sp.figures[gens[0]]}
            if (
                not pol.real and not pol.trad and not filtered
            ):  # CAS (the generator's metric): synthetic only, scored on real
                fid.update({f"cas_test_{a}": float(m[a]) for a in SCORES})
        if (
            filtered
        ):  # what the filter rejected, and its best/worst kept images, in this cell's own folder
            fid = {
                **fid,
                **filter_report(
                    samplers,
                    ctx.out / FIGURES / "filtered" / f"split{k}-{clf}-{policy}-r{r}",
                    fid.get(FIGURES),
                    f"{policy} (split {k})",
                ),
            }
        tune.report(
            with_run_info(
                {
                    **fid,
                    **{f"test_{a}": float(m[a]) for a in SCORES},
                    **{f"val_{a}": float(b) for a, b in res.val_metrics.items()},
                    "best_epoch": res.best_epoch,
                    "n_test": len(sp.test),
                    "n_train": len(sp.train),
                    names.FINAL: 1,
                    "classifier_dir": str(res.dir),
                },
                tags={"split_hash": sp.hash},
                params=res.params,
            )
        )

    def finish(
        self, cfg: BaselinesConfig, best_cfg, data: BaselinesData, results, ctx: StudyContext
    ) -> dict:
        import mlflow
        import pandas as pd
        from mlflow import MlflowClient

        from ..metrics.classification import SCORES, interval_text, results_table, summarize
        from ..metrics.power import verdicts
        from ..tracking.study_logger import KIND_TAG, set_parent_summary

        out = ctx.out
        done = finished(results, cfg.name, out)
        rows = []
        for _, t in done.sort_values(
            [
                "config/cell/split",
                "config/cell/classifier",
                "config/cell/policy",
                "config/cell/repeat",
            ]
        ).iterrows():
            rows.append(
                {
                    "classifier": t["config/cell/classifier"],
                    "policy": t["config/cell/policy"],
                    "split": int(t["config/cell/split"]),
                    "repeat": int(t["config/cell/repeat"]),
                    "best_epoch": int(t["best_epoch"]),
                    "n_test": int(t["n_test"]),
                    # cells recorded before cytoray kept it: None (summarize then says why it can't correct)
                    "n_train": int(t["n_train"]) if pd.notna(t.get("n_train")) else None,
                    **{a: float(t[a]) for a in done if a.startswith("val_")},
                    **{a: float(t[f"test_{a}"]) for a in SCORES},
                }
            )
        want = len(data.splits) * len(cfg.classifiers) * len(cfg.policies) * cfg.repeats
        if len(rows) != want:
            raise ConfigError(
                f"{len(rows)} of {want} cells finished; see the errors "
                "above (rerun with --resume to finish the rest)"
            )
        # Table with intervals and paired tests; Markdown, CSV, JSON; MLflow artefacts.
        summary = summarize(
            rows, metric=cfg.metric, baseline="orig", delta=cfg.effect, correction=cfg.correction
        )
        md, csv_rows = results_table(summary, cfg.classifiers, cfg.policies, cfg.metric)
        summary["verdicts"] = {
            c: verdicts(summary, c, cfg.policies, cfg.effect) for c in cfg.classifiers
        }
        header = (
            f"# {cfg.name}: test {cfg.metric} (%), mean ± 95% CI over {cfg.data.n_splits} splits "
            f"× {cfg.repeats} repeats\n\nData: {data.source}; ratio {cfg.ratio:g} synthetic:real "
            f"per class; paired t-tests vs orig (Holm); intervals: {interval_text(summary)}.\n\n"
            + verdict_lines(summary["verdicts"])
        )
        write_text(out / "table.md", header + md + "\n")
        write_text(
            out / "table.csv", "\n".join(",".join(str(c) for c in r) for r in csv_rows) + "\n"
        )
        write_json(out / "results.json", {"rows": rows, "summary": summary, "config": to_dict(cfg)})
        for f in ("table.md", "table.csv", "results.json"):
            mlflow.log_artifact(str(out / f))
        for g in data.needed:
            for png in sorted((out / "figures" / g / "split0").glob("*.png")):
                mlflow.log_artifact(str(png), artifact_path=f"figures/{g}")
        set_parent_summary(
            MlflowClient(),
            ctx.parent,
            {
                KIND_TAG: "baselines",
                "variant": ",".join(cfg.policies),
                "policy": ",".join(cfg.policies),
                "generator": ",".join(data.needed) or "none",
            },
            header + summary_lines(summary, cfg) + "\n\nReport: artefacts `report/report.html`.",
        )
        return {"table": md, "rows": rows, "summary": summary}


def filtered_samplers(cfg: BaselinesConfig, sp: BaselineSplit, samplers: dict, cache: Path) -> dict:
    """Each generator's sampler behind `cfg.filter` (`common.filtered_sampler`, as the ratio study)."""
    from .common import filtered_sampler

    return {
        g: filtered_sampler(s, cfg.filter, sp.train, sp.hash, cache, cfg.run.seed)
        for g, s in samplers.items()
    }


def filter_report(samplers: dict, d: Path, generator_figures: str | None, title: str) -> dict:
    """(cell) The filter's figures (`filter_<class>.png`, beside the generator's own PNGs, copied) in
    the cell's folder, which the MLflow callback logs to the cell's run; returns the report keys."""
    import shutil

    from .common import write_filter_grids

    d.mkdir(parents=True, exist_ok=True)
    if generator_figures and Path(generator_figures).is_dir():
        for png in Path(generator_figures).glob("*.png"):
            shutil.copyfile(png, d / png.name)
    out: dict = {FIGURES: str(d)}
    for g, s in samplers.items():
        write_filter_grids(d, s, f"{g}, filter {s.cfg.method} keep {s.cfg.keep:g}")
        out.update(s.stats())
    return out


def verdict_lines(by_classifier: dict[str, list[dict]]) -> str:
    """The verdicts (`metrics.power.verdict`), one Markdown bullet per policy, opening the table."""
    lines = [f"- {clf}: {v['sentence']}" for clf, vs in by_classifier.items() for v in vs]
    return (
        ("Verdicts against orig (paired over the same splits):\n\n" + "\n".join(lines) + "\n\n")
        if lines
        else ""
    )


def summary_lines(summary: dict, cfg: BaselinesConfig) -> str:
    """One line per classifier: the best policy and how it compares with orig (for the parent's description)."""
    lines = []
    for clf in cfg.classifiers:
        cells = {
            p: summary["cells"][f"{clf}|{p}"]
            for p in cfg.policies
            if f"{clf}|{p}" in summary["cells"]
        }
        if not cells:
            continue
        best = max(cells, key=lambda p: cells[p]["mean"])
        t = summary["tests"].get(f"{clf}|{best}")
        vs = f", {100 * t['mean_diff']:+.1f} points vs orig (Holm p={t['p_holm']:.2g})" if t else ""
        lines.append(f"- {clf}: best {best}, {100 * cells[best]['mean']:.1f}% {cfg.metric}{vs}")
    return "\n".join(lines)
