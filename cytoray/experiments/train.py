"""`cytoray train <generator>`: train any registered generator once, outside a study.

The run's config is the data, the Ray run settings and the generator's own section (and, for a
translator, the source domain). `--config` names a generator section YAML (configs/models/<name>.yaml);
`--set` keys may name the section (`cgan.lam=50`, `generator.cgan.lam=50` or `syncgan.cgan.lam=50`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from ..config import DataConfig, load
from ..errors import ConfigError
from ..generators.base import Generator, get_generator
from ..generators.domains import MIN_PER_CLASS, source_field
from ..training.config import RunConfig

TOP = ("data", "run", "source", "min_per_class", "generator")


def train_config_class(gen_cls: type[Generator]) -> type:
    """data + run + the generator's section (+ the source domain for a translator)."""
    fields = [
        ("data", DataConfig, dataclasses.field(default_factory=DataConfig)),
        ("run", RunConfig, dataclasses.field(default_factory=RunConfig)),
        ("generator", gen_cls.Config, dataclasses.field(default_factory=gen_cls.Config)),
    ]
    if gen_cls.consumes == "domains":
        fields += [
            ("source", DataConfig, source_field()),
            ("min_per_class", int, dataclasses.field(default=MIN_PER_CLASS)),
        ]
    return dataclasses.make_dataclass(f"Train{gen_cls.__name__}Config", fields)


def section_key(item: str, gen_name: str) -> str:
    """`cgan.lam=5` / `syncgan.cgan.lam=5` → `generator.cgan.lam=5`; data/run/... keys stay."""
    key, eq, value = item.partition("=")
    head, _, rest = key.partition(".")
    if head in TOP or not eq:
        return item
    if head == gen_name and not rest:
        raise ConfigError(
            f"--set {item}: '{gen_name}' is the generator's section, "
            f"not a key; set one of its keys, e.g. {gen_name}.epochs=5"
        )
    return f"generator.{rest if head == gen_name else key}={value}"


def load_train_config(gen_cls: type[Generator], a: argparse.Namespace):
    if gen_cls.consumes == "domains" and a.data and not a.source:
        raise ConfigError(
            f"{gen_cls.name} translates histology into cytology: "
            "with --data CYTOLOGY_DIR give --source HISTOLOGY_DIR"
        )
    if gen_cls.consumes != "domains" and a.source:
        raise ConfigError(
            "--source is the histology domain of a translation "
            f"generator; {gen_cls.name} takes --data only"
        )
    values: dict = {
        "data": {"root": a.data, "size": a.size},
        "run": {"num_workers": a.workers, "seed": a.seed, "use_gpu": a.gpu},
    }
    if gen_cls.consumes == "domains":
        values["source"] = {"root": a.source, "size": a.size}
    if a.config:  # checked on its own first, so an error names the file
        from ..config import to_dict

        values["generator"] = to_dict(load(gen_cls.Config, a.config))
    sets = [section_key(s, gen_cls.name) for s in a.set]
    if a.epochs is not None:  # every epoch count of the section
        cls = train_config_class(gen_cls)
        sec = dataclasses.asdict(cls().generator)
        sets = [f"generator.{k}={a.epochs}" for k in _epoch_keys(sec)] + sets
    return load(train_config_class(gen_cls), None, sets, values)


def _epoch_keys(section: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in section.items():
        if isinstance(v, dict):
            out += _epoch_keys(v, f"{prefix}{k}.")
        elif k == "epochs":
            out.append(f"{prefix}{k}")
    return out


def train_from_args(a: argparse.Namespace) -> int:
    import mlflow

    from ..config import to_dict
    from ..tracking.mlflow_utils import log_files, log_history, log_params_flat, setup

    gen_cls = get_generator(a.generator)
    cfg = load_train_config(gen_cls, a)
    from .preflight import check_class_names, check_local_placement, check_ray_head, check_storage

    check_ray_head(os.environ.get("RAY_ADDRESS"))  # before the split and the MLflow run are written
    # --workers 1000, --gpu without GPUs: refused, not queued forever
    check_local_placement(cfg.run)
    check_storage(cfg.run)
    check_class_names(cfg.data.root)
    from ..tracking.mlflow_utils import tracking_uri
    from ..tracking.reach import probe_tracking_server

    # a dead server: named before the split
    probe_tracking_server(tracking_uri(a.tracking_uri), "starting the training run")
    from .preflight import check_store_space

    check_store_space(a.tracking_uri)  # a full disk under the sqlite store: named before the split
    out = Path(a.out)
    # 1. Data and split(s), kept in `out` and reused while they match the data.
    if gen_cls.consumes == "domains":
        from ..generators.domains import domain_splits

        pairs, split_key, manifests = domain_splits(cfg.data, cfg.source, cfg.min_per_class, out)
        train, val = pairs["train"], pairs["val"]
        print(
            f"[data] histology train {train.source.counts()} → cytology "
            f"train {train.target.counts()} (splits {split_key})",
            file=sys.stderr,
        )
    else:
        from ..data.source import load_split

        ds, manifest = load_split(cfg.data, out / "split.json")
        train, val = ds.subset(manifest.indices("train")), ds.subset(manifest.indices("val"))
        split_key, manifests = manifest.hash, [out / "split.json"]
        print(
            f"[data] {manifest.source}: train {train.counts()} "
            f"val {val.counts()} (split {split_key})",
            file=sys.stderr,
        )
    # 2. Train under Ray Train (stages cached in out/stages); one
    # MLflow run, FAILED if training fails.
    uri = setup("cytoray-train", a.tracking_uri)
    t0 = time.perf_counter()
    with mlflow.start_run(run_name=f"train-{a.generator}-{split_key}"):
        mlflow.set_tags({"generator": a.generator, "variant": a.generator})
        # the section under the generator's own name: params read `gan.epochs`, `syncgan.cgan.lam`
        d = to_dict(cfg)
        log_params_flat(
            {**d, "generator": a.generator, a.generator: d["generator"], "split_hash": split_key}
        )
        bundle, stages = gen_cls.train(
            train, val, cfg.generator, out, out / "stages", split_key, cfg.run
        )
        for label, res in stages.items():
            log_history(label, res.history)
            log_files(res.grids(), f"samples/{label}")
        for m in manifests:
            mlflow.log_artifact(str(m))
        mlflow.log_metric("train_seconds", time.perf_counter() - t0)
    print(
        f"trained {a.generator} in {time.perf_counter() - t0:.0f}s "
        f"→ {bundle} (MLflow: mlflow ui --backend-store-uri {uri})"
    )
    for label, res in stages.items():
        first, last = res.history[0], res.history[-1]
        shown = "  ".join(
            f"{k} {first[k]:.3f} → {last[k]:.3f}" for k in ("loss_g", "loss_d") if k in first
        )
        print(f"  {label:<22} {shown}" + ("  (cached)" if res.cached else f"  {res.seconds:.0f}s"))
    return 0
