"""Refined segmentation (Hou et al., CVPR 2019): a nucleus segmenter for a lab with no annotated
nuclei, trained on refined simulation and judged on real H&E with masks.

Data: a real folder of H&E images with nucleus masks (`<root>/images + <root>/masks`, BreCaHAD's
layout, or `<root>/<class>/*.png + <class>/masks/`), resized by `data.scale` and cut into
`data.tile` px tiles, split by source image (seeded, 3:1:1). The TRAINING split's images are
only the unlabelled style/texture reference (their masks are dropped), or `data.reference`
when given; validation masks choose settings; the test split is touched once per figure.
Without a folder, the embedded H&E simulator plays "real", so the study runs anywhere.

1. Trials (Tune + Optuna): refined-sim with the point's refiner loss weights, hard-example
   weight and clip range on split 0; objective = pooled Dice on the validation tiles.
2. Finish: the best segmenter on split 0's test tiles; registered as `nucleus-segmenter` (with
   the refiner as `refiner`), champion on validation Dice. Then the comparison table over
   `data.n_splits` seeded splits (`compare` below): Otsu on haematoxylin (floor) · SynCGAN's
   unsupervised masks · segmenter on raw simulation · on refined · on refined + hard examples.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np

from ..config import ConfigError, to_dict
from ..data.folder import ImageSet
from ..generators.base import GeneratorConfig
from ..generators.refined_sim import LABEL, RefinedSim, RefinedSimConfig
from ..io import stable_hash, write_json
from ..metrics import names
from ..report.segmentation import PROPOSED, ROWS
from ..tracking.run_info import with_run_info
from ..training.config import RunConfig
from .common import register_best, train_generator, train_generators
from .driver import Study, StudyContext, TuneSettings

METRIC = names.VAL_DICE


@dataclasses.dataclass
class TileDataConfig:
    # real H&E with masks (<root>/images + masks/, or <root>/<class>/ + masks/); null = simulator
    root: str | None = None
    # unlabelled H&E folder (<root>/images or <root>/<class>/) for style; null = the training split
    reference: str | None = None
    # native → working resolution (BreCaHAD 1360x1024 → 340x256: nuclei ~5 px radius, CPU-sized)
    scale: float = 0.25
    # side of the tiles cut from each scaled image: the unit of validation, test and sampling
    tile: int = 128
    # mask grey level above which a pixel is nucleus (JPEG masks ring near edges)
    mask_threshold: int = 127
    # train(reference):val:test by source image
    split_ratios: list[float] = dataclasses.field(default_factory=lambda: [3.0, 1.0, 1.0])
    split_seed: int = 0  # seeds split 0; split k uses split_seed + k
    n_splits: int = 3  # seeded splits for the comparison table's mean ± 95% CI and paired tests
    # the simulator's domain when it plays "real": H&E (the refiner deconvolves H and E)
    sim_kind: Literal["histology"] = "histology"
    sim_n: int = 40  # simulator as "real": images (each one tile)
    sim_seed: int = 0  # simulator seed

    def validate(self) -> None:
        if not 0 < self.scale <= 4:
            raise ConfigError(f"data.scale={self.scale}: give a resize factor in (0, 4]")
        if self.tile < 32 or self.tile % 16:
            raise ConfigError(f"data.tile={self.tile}: must be >= 32 and a multiple of 16")
        if (
            len(self.split_ratios) != 3
            or min(self.split_ratios) < 0
            or self.split_ratios[0] <= 0
            or self.split_ratios[1] <= 0
        ):
            raise ConfigError(
                f"data.split_ratios={self.split_ratios}: give "
                "train:val:test weights, train and val > 0"
            )
        if self.sim_kind != "histology":
            raise ConfigError(
                f"data.sim_kind={self.sim_kind!r}: the "
                "refined-segmentation study simulates H&E; use histology"
            )
        if self.n_splits < 1 or self.sim_n < 5:
            raise ConfigError("data.n_splits must be >= 1 and data.sim_n >= 5")


def _default_generator() -> RefinedSimConfig:
    return RefinedSimConfig()


@dataclasses.dataclass
class SegmentationStudyConfig:
    name: str = "refined_segmentation"  # MLflow experiment, Tune experiment and output folder name
    data: TileDataConfig = dataclasses.field(default_factory=TileDataConfig)
    # refined-sim settings (searched)
    generator: GeneratorConfig = dataclasses.field(default_factory=_default_generator)
    compare: bool = True  # the comparison table over data.n_splits after the search
    # register the best segmenter and refiner; champion moves only on validation Dice
    register: bool = True
    # champions compete within one protocol; null = this split (split:<hash>)
    registry_protocol: str | None = None
    # a run whose stage trains fewer epochs (a smoke run) never takes the champion alias
    champion_min_epochs: int = 5
    # the table's SynCGAN row: syncgan = the paper's RGB masks; stain = cytoray's default
    syncgan_mask_method: str = "syncgan"
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(checkpoint_every=10))
    tune: TuneSettings = dataclasses.field(
        default_factory=lambda: TuneSettings(
            search_space="configs/search/refined_segmentation.yaml",
            num_samples=3,
            asha=False,
            metric=METRIC,  # higher is better: TuneSettings' mode (max)
        )
    )

    def validate(self) -> None:
        if self.generator.name != LABEL:
            raise ConfigError(
                f"generator.name={self.generator.name!r}: this study trains {LABEL!r}"
            )
        if self.data.tile < self.generator.patch:
            raise ConfigError(
                f"data.tile={self.data.tile} < generator.patch={self.generator.patch}: "
                "tiles must hold a training crop"
            )
        if self.tune.metric != METRIC or self.tune.mode != "max" or self.tune.asha:
            raise ConfigError(
                f"tune.metric/mode/asha: this study selects on {METRIC} (max) with asha=false"
            )
        if self.syncgan_mask_method not in ("syncgan", "stain"):
            raise ConfigError(
                f"syncgan_mask_method={self.syncgan_mask_method!r}: "
                "choose syncgan (the paper's) or stain"
            )
        if self.compare and self.data.n_splits < 2:
            raise ConfigError(
                "compare=true needs data.n_splits >= 2 (a CI and a "
                "paired test need two splits); or set compare=false"
            )


# ----------------------------------------------------------------------------- data


def load_real(cfg: TileDataConfig) -> ImageSet:
    """The real tiles with masks (or the simulator's H&E images, one tile each, exact masks)."""
    from ..data.refsim import load_tiles
    from ..data.source import simulated_set

    if cfg.root:
        return load_tiles(cfg.root, cfg.scale, cfg.tile, cfg.mask_threshold)
    ds = simulated_set(cfg.sim_kind, cfg.sim_n, cfg.tile, cfg.sim_seed)
    return dataclasses.replace(ds, groups=list(ds.names))


@dataclasses.dataclass
class TileSplit:
    """Split k by source image: the generator's unlabelled reference (masks dropped), the
    validation and test tiles with masks, the split's hash and its manifest (names and sha256)."""

    reference: ImageSet
    val: ImageSet
    test: ImageSet
    hash: str
    manifest: dict


@dataclasses.dataclass
class SegmentationData:
    """Every split (split 0 is searched on), the data's source and the manifest files."""

    splits: list[TileSplit]
    source: str
    manifests: list[str]


def split_sets(
    real: ImageSet, reference: ImageSet | None, cfg: TileDataConfig, k: int
) -> TileSplit:
    """Split k: the generator's reference (unlabelled: masks dropped), val and test tiles, and a manifest."""
    from ..data.refsim import split_groups

    idx = split_groups(real.groups, cfg.split_ratios, cfg.split_seed + k)
    parts = {s: real.subset(idx[s]) for s in ("train", "val", "test")}
    ref = reference if reference is not None else dataclasses.replace(parts["train"], masks=None)
    manifest = {
        s: [{"name": n, "sha256": h} for n, h in zip(parts[s].names, parts[s].sha256)]
        for s in parts
    }
    manifest["reference"] = [{"name": n, "sha256": h} for n, h in zip(ref.names, ref.sha256)]
    return TileSplit(ref, parts["val"], parts["test"], stable_hash(manifest), manifest)


def pooled_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice over every pixel of a split (tiles without annotated nuclei do not count as 0 or 1)."""
    from ..metrics.segmentation import dice

    return float(dice(pred, truth))


# ----------------------------------------------------------------------------- the study


class SegmentationStudy(Study):
    Config = SegmentationStudyConfig

    def prepare(self, cfg: SegmentationStudyConfig, out: Path) -> SegmentationData:
        from ..data.refsim import load_tiles

        real = load_real(cfg.data)
        if real.masks is None:
            raise ConfigError(
                f"{real.source}: every real image needs a nucleus "
                "mask (validation and test are scored on them)"
            )
        reference = None
        if cfg.data.reference:
            reference = dataclasses.replace(
                load_tiles(cfg.data.reference, cfg.data.scale, cfg.data.tile, need_masks=False),
                masks=None,
            )
        splits = []
        for k in range(cfg.data.n_splits if cfg.compare else 1):
            sp = split_sets(real, reference, cfg.data, k)
            write_json(out / f"split_{k}.json", {"hash": sp.hash, **sp.manifest})
            splits.append(sp)
        s0 = splits[0]
        print(
            f"[study] {cfg.name}: {real.source}: {len(s0.reference)} reference, {len(s0.val)} "
            f"val, {len(s0.test)} test tiles (split 0 {s0.hash}); {len(splits)} split(s)",
            file=sys.stderr,
            flush=True,
        )
        manifests = [str(out / f"split_{k}.json") for k in range(len(splits))]
        return SegmentationData(splits, real.source, manifests)

    def describe(self, config: dict):
        from ..config import flatten

        flat = flatten(config)
        keys = [
            k
            for k in flat
            if k.startswith("generator.") and any(t in k for t in ("weight", "hard"))
        ]
        name = (
            " ".join(
                f"{k.rsplit('.', 1)[-1]}={flat[k]:.3g}" for k in keys if isinstance(flat[k], float)
            )
            or "trial"
        )
        return (
            name,
            {k: str(v)[:500] for k, v in flat.items()},
            {"generator": LABEL, "variant": "refined+hard"},
        )

    def trial(
        self, cfg: SegmentationStudyConfig, cell, data: SegmentationData, ctx: StudyContext
    ) -> None:
        from ray import tune

        sp, t0 = data.splits[0], time.perf_counter()
        # 1. The refiner, discriminator and segmenter for this point (bundle and stage caches).
        gen, bundle, cached = train_generator(
            RefinedSim,
            cfg.generator,
            sp.reference,
            sp.val,
            sp.hash,
            ctx.cache,
            cfg.run,
            ctx.use_cache,
        )
        # 2. Validation Dice of the segmenter on the real validation tiles (pooled over pixels).
        val_dice = pooled_dice(gen.segment(sp.val.images), sp.val.masks)
        best = gen.meta.get("best_metrics", {})
        figures = trial_figures(ctx.out, gen, sp.val, bundle, cfg.run.seed)
        tune.report(
            with_run_info(
                {
                    METRIC: val_dice,
                    **{
                        f"stage_{k}": float(best[k])
                        for k in ("d_acc_initial", "d_acc_refined", "val_dice_synthetic")
                        if k in best
                    },
                    "best_epoch": int(gen.meta.get("best_epoch", -1)),
                    names.GENERATOR_CACHED: int(cached),
                    "bundle": str(bundle),
                    "figures": figures,
                    names.FINAL: 1,
                    names.TRIAL_SECONDS: time.perf_counter() - t0,
                },
                tags={"generator": LABEL},
            )
        )

    def finish(
        self,
        cfg: SegmentationStudyConfig,
        best_cfg: SegmentationStudyConfig,
        data: SegmentationData,
        results,
        ctx: StudyContext,
    ) -> dict:
        import mlflow

        out, cache, sp = ctx.out, ctx.cache, data.splits[0]
        gen, bundle, _ = train_generator(
            RefinedSim,
            best_cfg.generator,
            sp.reference,
            sp.val,
            sp.hash,
            cache,
            best_cfg.run,
        )
        val_dice = pooled_dice(gen.segment(sp.val.images), sp.val.masks)
        test = {
            "test_dice": pooled_dice(gen.segment(sp.test.images), sp.test.masks)
        }  # the test split, once
        write_json(
            out / "best.json",
            {
                "config": to_dict(best_cfg),
                "val_dice": val_dice,
                **test,
                "bundle": str(bundle),
                "split_hash": sp.hash,
            },
        )
        mlflow.log_metrics({"best_val_dice": val_dice, "best_test_dice": test["test_dice"]})
        seg_bundle = write_best_segmenter(
            out / "best_segmenter", gen, bundle, best_cfg, sp.hash, val_dice
        )
        registered = (
            register_chosen(best_cfg, bundle, seg_bundle, val_dice, test, sp.hash, ctx.smoke)
            if cfg.register
            else {}
        )
        table, comparison = None, None
        if cfg.compare:  # every row on every split's test tiles: mean ± 95% CI, paired tests
            comparison = compare(
                best_cfg.generator,
                data.splits,
                cache,
                best_cfg.run,
                ctx.use_cache,
                cfg.syncgan_mask_method,
            )
            table = write_comparison(out, comparison, data.source, best_cfg)
        compared = (
            [out / n for n in ("comparison.md", "comparison.csv", "comparison.json")]
            if comparison is not None
            else []
        )
        for f in [
            out / "best.json",
            *compared,
            *map(Path, data.manifests),
        ]:  # never an earlier run's comparison left in --out
            if f.is_file():
                mlflow.log_artifact(str(f))
        from mlflow import MlflowClient

        from ..tracking.study_logger import KIND_TAG, set_parent_summary

        set_parent_summary(
            MlflowClient(),
            ctx.parent,
            {KIND_TAG: "segmentation", "generator": LABEL, "variant": "+".join(ROWS)},
            f"**{cfg.name}**: refined-sim searched on split 0 (validation Dice {val_dice:.3f}; "
            f"its test Dice, scored once, {test['test_dice']:.3f}).\n\n" + (table or ""),
        )
        return {
            "val_dice": val_dice,
            "test": test,
            "table": table,
            "comparison": comparison,
            "registered": registered,
            "bundle": str(bundle),
            "segmenter": str(seg_bundle),
        }


# ----------------------------------------------------------------------------- artefacts


def trial_figures(out: Path, gen: RefinedSim, val: ImageSet, bundle: Path, seed: int) -> str:
    """(trial) initial | refined | mask and validation tile | truth | prediction grids, plus the stage's
    per-epoch history, in `<out>/figures/<trial id>/` (the MLflow callback logs them)."""
    import shutil

    from ray import tune

    from ..io import save_png
    from ..tracking.study_logger import HISTORY

    d = out / "figures" / (tune.get_context().get_trial_id() or "trial")
    save_png(d / "initial_refined_mask.png", sample_grid(gen, seed))
    save_png(d / "val_truth_prediction.png", prediction_grid(val, gen.segment(val.images[:6])))
    for png in sorted((Path(bundle) / "grids").rglob("*.png"))[
        -2:
    ]:  # the stage's last sample grids
        shutil.copy2(png, d / f"stage_{png.name}")
    if (
        Path(bundle) / "history.json"
    ).is_file():  # per-epoch stage metrics → MLflow learning curves
        shutil.copy2(Path(bundle) / "history.json", d / HISTORY)
    return str(d)


def sample_grid(gen: RefinedSim, seed: int, n: int = 6) -> np.ndarray:
    """Rows: initial | refined | exact mask, for n samples of the first class."""
    cls = gen.classes[0]
    rng = np.random.default_rng([seed, 99])
    which = rng.integers(0, len(gen.refs[cls]["tiles"]), n)
    init, refined, masks = gen.synthesise(cls, which, seed + 99, rng)
    m = np.repeat((masks * 255).astype(np.uint8)[..., None], 3, -1)
    return np.concatenate([np.concatenate(list(r), 1) for r in (init, refined, m)], 0)


def prediction_grid(ds: ImageSet, pred: np.ndarray) -> np.ndarray:
    """Rows: real tile | its mask | the segmenter's mask."""
    k = len(pred)
    rgb = lambda m: np.repeat((m.astype(np.uint8) * 255)[..., None], 3, -1)  # noqa: E731
    return np.concatenate(
        [np.concatenate(list(r), 1) for r in (ds.images[:k], rgb(ds.masks[:k]), rgb(pred))], 0
    )


def write_best_segmenter(
    out: Path,
    gen: RefinedSim,
    bundle: Path,
    cfg: SegmentationStudyConfig,
    split_hash: str,
    val_dice: float,
) -> Path:
    """The chosen segmenter as a segmenter bundle (with its working scale) that is also a copy of its
    refined-sim generator bundle: `cytoray segment` and either registry pyfunc can load it."""
    import shutil

    from ..masks.nucleus_net import write_segmenter_bundle

    shutil.copytree(bundle, out, dirs_exist_ok=True)
    return write_segmenter_bundle(
        out,
        gen.segmenter.state_dict(),
        gen.meta["segmenter_kwargs"],
        cfg.generator.segmenter.threshold,
        cfg.data.scale if cfg.data.root else 1.0,
        {
            "study": cfg.name,
            "split_hash": split_hash,
            "val_dice": val_dice,
            "tile": cfg.data.tile,
            "trained_on": "refined simulation (Hou et al. 2019)",
        },
    )


def register_chosen(
    cfg: SegmentationStudyConfig,
    gen_bundle: Path,
    seg_bundle: Path,
    val_dice: float,
    test: dict,
    split_hash: str,
    smoke: bool,
) -> dict:
    """`nucleus-segmenter` and `refiner`: champion decided on validation Dice, test Dice recorded."""
    s = cfg.generator.schedule
    return register_best(
        [("nucleus-segmenter", seg_bundle, "segmenter"), ("refiner", gen_bundle, "generator")],
        score=val_dice,
        protocol=cfg.registry_protocol or f"split:{split_hash}",
        metric=METRIC,
        higher_is_better=True,
        recorded=test,
        smoke=smoke,
        budget=s.discriminator_epochs + s.joint_epochs + s.segmenter_epochs,
        min_epochs=cfg.champion_min_epochs,
    )


# ----------------------------------------------------------------------------- the comparison


def variant_configs(g: RefinedSimConfig) -> dict[str, RefinedSimConfig]:
    """The three trained rows from one setting: no refiner; refiner without the hard-example term
    and weights; the setting itself (refiner, hard examples, realism weights)."""
    r, s = dataclasses.replace, g.segmenter
    return {
        "raw": r(g, refiner=r(g.refiner, enabled=False), segmenter=r(s, example_weights=False)),
        "refined": r(
            g, refiner=r(g.refiner, hard_weight=0.0), segmenter=r(s, example_weights=False)
        ),
        PROPOSED: g,
    }


def train_variants(
    g: RefinedSimConfig,
    splits: list[TileSplit],
    cache: Path,
    run: RunConfig,
    use_cache: bool = True,
) -> dict[str, Path]:
    """Every variant of `g` (`variant_configs`) on every split: {"s<k>/<variant>": bundle folder},
    cached bundles reused, the others trained in one Ray Train job."""
    jobs = {
        f"s{k}/{v}": (c, sp.reference, sp.val, sp.hash)
        for k, sp in enumerate(splits)
        for v, c in variant_configs(g).items()
    }
    return train_generators(RefinedSim, jobs, cache, run, use_cache)


def row_masks(
    row: str, images: np.ndarray, bundles: dict, mask_method: str = "syncgan"
) -> np.ndarray:
    """One row's masks of test tiles: the two unsupervised methods, or a trained segmenter."""
    from ..data.refsim import otsu_haematoxylin
    from ..masks import nucleus_mask

    if row == "otsu":
        return np.stack([otsu_haematoxylin(im) for im in images])
    if row == "syncgan_masks":
        return np.stack([nucleus_mask(im, method=mask_method) for im in images])
    return RefinedSim.load(bundles[row]).segment(images)


def compare(
    g: RefinedSimConfig,
    splits: list[TileSplit],
    cache: Path,
    run: RunConfig,
    use_cache: bool = True,
    mask_method: str = "syncgan",
) -> dict:
    """Every row's pooled test Dice on every split (its test tiles, touched once here), the
    realism probe (held-out accuracy of a fresh CNN at telling real tiles from samples), and the
    paired tests of refined + hard examples against each other row (Holm-adjusted)."""
    from ..generators.refined_stage import realism_probe
    from ..metrics.classification import holm, mean_ci, paired_test

    bundles = train_variants(g, splits, cache, run, use_cache)
    scores: dict[str, list[float]] = {r: [] for r in ROWS}
    probe: dict[str, list[float]] = {"initial": [], "refined": []}
    for k, sp in enumerate(splits):
        test, mine = sp.test, {v: bundles[f"s{k}/{v}"] for v in variant_configs(g)}
        for row in ROWS:
            scores[row].append(
                pooled_dice(row_masks(row, test.images, mine, mask_method), test.masks)
            )
        # 2. realism of its initial and refined images against real tiles
        gen = RefinedSim.load(mine[PROPOSED])
        real = np.concatenate([sp.val.images, test.images])
        init, refined = initial_and_refined(gen, len(real), run.seed + k)
        probe["initial"].append(realism_probe(real, init, seed=k))
        probe["refined"].append(realism_probe(real, refined, seed=k))
        print(
            f"[compare] split {k}: " + ", ".join(f"{r} {scores[r][-1]:.3f}" for r in ROWS),
            file=sys.stderr,
            flush=True,
        )
    tests = (
        {r: paired_test(scores[PROPOSED], scores[r]) for r in ROWS if r != PROPOSED}
        if len(splits) >= 2
        else {}
    )
    for r, p in holm({r: t["p_value"] for r, t in tests.items()}).items():
        tests[r]["p_holm"] = p
    return {
        "scores": scores,
        "cells": {r: mean_ci(v) for r, v in scores.items()},
        "tests": tests,
        "probe": probe,
        "n_splits": len(splits),
        "n_test": [len(sp.test) for sp in splits],
        "syncgan_method": mask_method,
    }


def initial_and_refined(gen: RefinedSim, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n initial images of a trained refined-sim and the same images refined (first class)."""
    cls = gen.classes[0]
    rng = np.random.default_rng([seed, 7])
    which = rng.integers(0, len(gen.refs[cls]["tiles"]), n)
    init, refined, _ = gen.synthesise(cls, which, seed, rng)
    return init, refined


def comparison_table(c: dict, source: str) -> tuple[str, list[list[str]]]:
    """Markdown and CSV rows: test Dice mean ± 95% CI, Δ of refined + hard examples against each row."""
    from ..metrics.classification import format_cell

    lines = [
        f"Test Dice on {source} (pooled over each split's test tiles; mean "
        f"± 95% t-interval over {c['n_splits']} seeded splits by source "
        f"image, {min(c['n_test'])}-{max(c['n_test'])} test tiles each)",
        "",
        "| method | test Dice (%) | Δ refined+hard − "
        "method (points) | p paired t (Holm) | p Wilcoxon |",
        "|---|---|---|---|---|",
    ]
    csv = [
        [
            "method",
            "mean",
            "low",
            "high",
            "n",
            "diff_refined_hard_minus_method",
            "p_t",
            "p_holm",
            "p_wilcoxon",
            *[f"split_{k}" for k in range(c["n_splits"])],
        ]
    ]
    for r, label in ROWS.items():
        label = f"{label} (method={c['syncgan_method']})" if r == "syncgan_masks" else label
        ci, t = c["cells"][r], c["tests"].get(r)
        diff = (
            f"{100 * t['mean_diff']:+.1f} [{100 * t['ci_low']:+.1f}, {100 * t['ci_high']:+.1f}]"
            if t
            else "—"
        )
        lines.append(
            f"| {label} | {format_cell(ci)} | {diff} | {t['p_holm']:.3g} | {t['p_wilcoxon']:.3g} |"
            if t
            else f"| {label} | {format_cell(ci)} | — | — | — |"
        )
        csv.append(
            [
                label,
                f"{ci['mean']:.6g}",
                f"{ci['low']:.6g}",
                f"{ci['high']:.6g}",
                str(ci["n"]),
                *(
                    [
                        f"{t['mean_diff']:.6g}",
                        f"{t['p_t']:.6g}",
                        f"{t['p_holm']:.6g}",
                        f"{t['p_wilcoxon']:.6g}",
                    ]
                    if t
                    else ["", "", "", ""]
                ),
                *[f"{v:.6g}" for v in c["scores"][r]],
            ]
        )
    pi, pr = np.mean(c["probe"]["initial"]), np.mean(c["probe"]["refined"])
    lines += [
        "",
        "Realism probe (a fresh CNN told real tiles from samples, held-out accuracy, "
        f"0.5 = indistinguishable; mean over splits): initial {pi:.2f}, refined {pr:.2f}.",
    ]
    return "\n".join(lines) + "\n", csv


def write_comparison(out: Path, c: dict, source: str, cfg) -> str:
    from ..io import write_text

    md, csv = comparison_table(c, source)
    write_text(out / "comparison.md", md)
    write_text(
        out / "comparison.csv",
        "\n".join(",".join(f'"{v}"' if "," in v else v for v in row) for row in csv) + "\n",
    )
    write_json(out / "comparison.json", {**c, "config": to_dict(cfg)})
    return md
