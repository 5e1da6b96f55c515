"""Histology → cytology (Dey et al.): per-class CycleGAN vs neural style transfer, FID/KID per class.

Rows of the table, each against the cytology TEST split and from the same held-out histology
test images: real histology (the baseline), then one row per translator (`variants`). With a
search space, Tune + Optuna first search the translators' settings on the VALIDATION split
(multi-objective: one validation FID per translator; their settings are disjoint, so each takes
its own best trial); without one, the configured settings go straight to the table.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from ..config import ConfigError, DataConfig, to_dict
from ..generators.base import GeneratorConfig, get_generator
from ..generators.cyclegan import CycleGANConfig
from ..generators.domains import MIN_PER_CLASS, DomainPair, check_min_per_class, source_field
from ..generators.nst import NSTConfig
from ..io import save_png, write_text
from ..metrics import names
from ..training.config import RunConfig
from .common import train_generator
from .driver import Study, StudyContext, TuneSettings, clean, point_of


def _default_generators() -> dict[str, GeneratorConfig]:
    return {"cyclegan": CycleGANConfig(), "nst": NSTConfig()}


@dataclasses.dataclass
class HistoToCytoConfig:
    name: str = "cytoray-histo-to-cyto"  # MLflow experiment and Tune experiment name
    data: DataConfig = dataclasses.field(default_factory=DataConfig)  # the target domain: cytology
    source: DataConfig = source_field()  # the source domain: histology (generators/domains.py)
    min_per_class: int = MIN_PER_CLASS  # per class and domain
    # translators compared, one row each
    variants: list[str] = dataclasses.field(default_factory=lambda: ["cyclegan", "nst"])
    # their settings
    generators: dict[str, GeneratorConfig] = dataclasses.field(default_factory=_default_generators)
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(checkpoint_every=10))
    tune: TuneSettings = dataclasses.field(
        default_factory=lambda: TuneSettings(
            num_samples=8, asha=False, metric=names.FID_VAL, mode="min"
        )
    )

    def validate(self) -> None:
        if self.data.size != self.source.size:
            raise ConfigError(
                f"source.size={self.source.size} != data.size={self.data.size}: "
                "the translators map images of one size"
            )
        check_min_per_class(self.min_per_class)
        if not self.variants:
            raise ConfigError("variants: name at least one translator (cyclegan, nst)")

    def generator_config(self, name: str) -> GeneratorConfig:
        return self.generators.get(name) or get_generator(name).Config()


def translations(pair, samplers: dict) -> dict[str, dict[str, np.ndarray]]:
    """The rows, each from the same source histology images, class by class."""
    src = {
        c: pair.source.images[pair.source.labels == i]
        for i, c in enumerate(pair.source.class_names)
    }
    rows = {"histology": src}
    for name, s in samplers.items():
        rows[name] = {c: s.translate(x, c, seed=i) for i, (c, x) in enumerate(src.items())}
    return rows


def fid_rows(rows: dict, ref, split: str, key: str, cache: Path) -> dict[str, dict[str, float]]:
    from ..metrics import realism
    from ..metrics.fidelity import cached_features, inception_features, per_class

    real = {
        c: cached_features(ref.images[ref.labels == i], f"cytology:{key}:{split}:{c}", cache)
        for i, c in enumerate(ref.class_names)
    }
    out = {}
    for (
        row,
        fakes,
    ) in rows.items():  # FID/KID, then precision/recall/density/coverage on the same features
        ff = {c: inception_features(x) for c, x in fakes.items()}
        m = {
            **per_class({}, fakes, split, real_features=real, fake_features=ff),
            **realism.per_class(real, ff, split)[0],
        }
        out[row] = {k: float(v) for k, v in m.items()}
    return out


@dataclasses.dataclass
class HistoData:
    """Both domains split (train/val/test DomainPairs), the key naming both splits, the manifests."""

    pairs: dict[str, DomainPair]
    key: str
    manifests: list[str]


class HistoToCytoStudy(Study):
    Config = HistoToCytoConfig

    def check(self, cfg: HistoToCytoConfig) -> None:
        # A search trial trains every translator: its child run's tags say so (describe() below).
        self.tags = {
            "variant": "search: " + "+".join(cfg.variants),
            "generator": "+".join(cfg.variants),
            "policy": "none",
        }
        for v in cfg.variants:
            if get_generator(v).consumes != "domains":
                raise ConfigError(
                    f"variants: {v!r} does not translate a "
                    "source domain (it consumes one image set)"
                )

    def prepare(self, cfg: HistoToCytoConfig, out: Path) -> HistoData:
        from ..generators.domains import domain_splits

        pairs, key, paths = domain_splits(cfg.data, cfg.source, cfg.min_per_class, out)
        return HistoData(pairs, key, [str(p) for p in paths])

    def _samplers(
        self, cfg: HistoToCytoConfig, data: HistoData, cache: Path, use_cache: bool = True
    ) -> dict:
        p = data.pairs
        return {
            v: train_generator(
                get_generator(v),
                cfg.generator_config(v),
                p["train"],
                p["val"],
                data.key,
                cache,
                cfg.run,
                use_cache,
            )[0]
            for v in cfg.variants
        }

    def describe(self, config: dict):
        """A search trial trains every translator with its point's settings: named by them, per translator."""
        from ..config import flatten

        flat = flatten(config)

        def short(k: str) -> str:  # generators.nst.style_weight -> nst.style_weight
            parts = k.split(".")
            return (
                f"{parts[1]}.{parts[-1]}"
                if parts[0] == "generators" and len(parts) > 2
                else parts[-1]
            )

        name = " ".join(
            f"{short(k)}={v:.3g}" if isinstance(v, float) else f"{short(k)}={v}"
            for k, v in flat.items()
        )
        return (
            name or "trial",
            {k: str(v)[:500] for k, v in flat.items()},
            dict(getattr(self, "tags", {})),
        )

    def objectives(self, cfg: HistoToCytoConfig):
        return [f"{v}/{cfg.tune.metric}" for v in cfg.variants], [cfg.tune.mode] * len(cfg.variants)

    def trial(self, cfg: HistoToCytoConfig, cell, data: HistoData, ctx: StudyContext) -> None:
        """Train every translator with the point's settings; FID against the cytology VALIDATION split."""
        from ray import tune

        cache = ctx.cache
        rows = translations(data.pairs["val"], self._samplers(cfg, data, cache, ctx.use_cache))
        rows.pop("histology")
        fids = fid_rows(rows, data.pairs["val"].target, "val", data.key, cache / "features")
        tune.report(
            {**{f"{row}/{k}": v for row, m in fids.items() for k, v in m.items()}, names.FINAL: 1}
        )

    def best(self, cfg: HistoToCytoConfig, done, space) -> dict:
        """The translators' settings are disjoint: each takes its own best trial's."""
        point: dict = {}
        for v, (metric, mode) in zip(cfg.variants, zip(*self.objectives(cfg))):
            row = done.sort_values(metric, ascending=mode == "min").iloc[0]
            mine = point_of(row).get("generators", {}).get(v)
            if mine:
                point.setdefault("generators", {})[v] = mine
        print(f"[search] best by validation FID: {clean(point)}", file=sys.stderr)
        return point

    def finish(
        self,
        cfg: HistoToCytoConfig,
        best_cfg: HistoToCytoConfig,
        data: HistoData,
        results,
        ctx: StudyContext,
    ) -> dict:
        import mlflow
        from mlflow import MlflowClient

        from ..metrics.fidelity import extractor_identity, per_class_notes
        from ..tracking.mlflow_utils import log_files, log_params_flat
        from ..tracking.study_logger import KIND_TAG, set_parent_summary

        out, cache = ctx.out, ctx.cache
        samplers = self._samplers(best_cfg, data, cache)
        labels = {
            "histology": "real histology",
            **{v: s.display_name() for v, s in samplers.items()},
        }  # each translator names itself
        log_params_flat(
            {
                "best": to_dict(best_cfg),
                **{
                    f"{v}.features": s.features
                    for v, s in samplers.items()
                    if hasattr(s, "features")
                },
                **extractor_identity(),
            }
        )
        # The rows against the cytology TEST split (touched once, here).
        test = data.pairs["test"]
        rows = translations(test, samplers)
        fids = fid_rows(rows, test.target, "test", data.key, cache / "features")
        md, csv = fid_table(fids, list(test.target.class_names), labels)
        notes = [
            f"- {labels[row]}: {line}"
            for row, m in fids.items()
            for line in per_class_notes(m, "test")
        ]
        floors = {
            c: fids["histology"].get(names.fid("test", c, "floor"))
            for c in [*test.target.class_names, "all"]
        }
        floor_line = ", ".join(f"{c} {v:.1f}" for c, v in floors.items() if v is not None)
        md = (
            f"FID/KID vs real cytology (test split, {test.source.counts()} images "
            f"per class per row; {extractor_identity()['feature_extractor']}; "
            f"split protocol 3:1:1, one seeded split)\n\n{md}"
            + (
                "\nReal-vs-real floor (two seeded halves of the real "
                f"cytology test images): FID {floor_line}. A figure near "
                "its floor is as good as these sample sizes can show.\n"
                if floor_line
                else ""
            )
            + ("\n" + "\n".join(notes) + "\n" if notes else "")
        )
        write_text(out / "fid_table.md", md)
        write_text(out / "fid_table.csv", csv)
        for c in test.target.class_names:
            save_png(out / "grids" / f"{c}.png", grid_png(rows, c, labels))
        for row, m in fids.items():
            mlflow.log_metrics({f"{row}/{k}": v for k, v in m.items()})
        log_files(
            [
                out / "fid_table.md",
                out / "fid_table.csv",
                *sorted((out / "grids").glob("*.png")),
                *map(Path, data.manifests),
            ],
            "results",
        )
        result_runs(fids, labels, ctx)
        set_parent_summary(
            MlflowClient(),
            ctx.parent,
            {KIND_TAG: "histo_to_cyto", **self.tags, "variant": "+".join(cfg.variants)},
            f"**{cfg.name}**: histology→cytology by "
            + ", ".join(labels[v] for v in samplers)
            + "; FID/KID per class "
            "against the real cytology test split (split protocol 3:1:1, one "
            f"seeded split, {test.source.counts()} images per class per row).\n\n"
            + "\n".join(
                f"- {labels[r]}: FID/all {m[names.FID_TEST]:.1f}, KID/all {m[names.KID_TEST]:.4f}"
                for r, m in fids.items()
            )
            + "\n\nOne child run per row (`result: ...`) holds the same keys, for the compare view. "
            "Report: artefacts `report/report.html`.",
        )
        return {"table": md, "fids": fids}


def result_runs(fids: dict, labels: dict, ctx: StudyContext) -> None:
    """One child run per table row with the same metric keys (`fid_test_inception/all`, ...), so
    the MLflow UI's compare view lines the translators and the real-histology baseline up."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from ..tracking.study_logger import result_child

    client = MlflowClient()
    exp = client.get_run(ctx.parent).info.experiment_id
    for row, m in fids.items():
        tags = {
            "variant": row,
            "generator": "none (real histology)" if row == "histology" else row,
            "policy": "none",
        }
        rid = result_child(client, exp, ctx.parent, f"row:{row}", f"result: {labels[row]}", tags)
        client.log_batch(
            rid, metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in m.items()]
        )
        # its grids are the parent's results/<class>.png (every row in each)
        client.set_terminated(rid, "FINISHED")


def fid_table(fids: dict, classes: list[str], labels: dict[str, str]) -> tuple[str, str]:
    from ..metrics.fidelity_stats import kid_text_of

    cols = [*classes, "all"]
    head = ["row", *(f"FID {c}" for c in cols), *(f"KID {c}" for c in cols)]
    md = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    csv = [
        ",".join(
            [
                "row",
                *(f"fid_{c}" for c in cols),
                *(f"kid_{c}" for c in cols),
                *(f"kid_std_{c}" for c in cols),
            ]
        )
    ]
    for row, m in fids.items():
        fid = [m[names.fid("test", c)] for c in cols]
        kid = [(m[names.kid("test", c)], m[names.kid("test", c, "std")]) for c in cols]
        kid_md = [
            kid_text_of(m, names.kid("test", c)) for c in cols
        ]  # no "± 0.0000" where subsets are whole sets
        md.append("| " + " | ".join([labels[row], *(f"{v:.1f}" for v in fid), *kid_md]) + " |")
        csv.append(
            ",".join(
                [
                    f'"{labels[row]}"',
                    *(f"{v:.4f}" for v in fid),
                    *(f"{a:.6f}" for a, _ in kid),
                    *(f"{b:.6f}" for _, b in kid),
                ]
            )
        )
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def grid_png(rows: dict, cls: str, labels: dict[str, str], k: int = 8) -> np.ndarray:
    """The same source histology images (top row), then each translator's output, one labelled row each."""
    import re

    from ..report.grids import labelled_grid

    named = {
        re.sub(r":sha1=[0-9a-f]+", "", labels[r]): rows[r][cls] for r in rows
    }  # the extractor's hash is in the table
    return labelled_grid(
        named, f"{cls}: the same test histology images, translated (FID/KID in fid_table.md)", k
    )
