"""`cytoray train syncgan|gan|cyclegan`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path



def load_train_config(a: argparse.Namespace):
    from ..config import load
    from .config import GeneratorTrainConfig

    sets = [f"data.size={a.size}", f"run.num_workers={a.workers}", f"run.seed={a.seed}"]
    sets.append(f"data.root={a.data}" if a.data else "data.root=null")
    if a.gpu:
        sets.append("run.use_gpu=true")
    if a.epochs is not None:
        sets += [f"cgan.epochs={a.epochs}", f"mask_gan.epochs={a.epochs}", f"gan.epochs={a.epochs}"]
    return load(GeneratorTrainConfig, a.config, sets + list(a.set))


def load_translation_config(a: argparse.Namespace):
    """`cytoray train cyclegan`: cytology from --data (or the simulator), histology from --source."""
    from ..config import ConfigError, load
    from .cyclegan import TranslationConfig

    if a.data and not a.source:
        raise ConfigError("cyclegan translates histology into cytology: with --data CYTOLOGY_DIR give --source HISTOLOGY_DIR")
    sets = [f"histology.size={a.size}", f"cytology.size={a.size}", f"run.num_workers={a.workers}", f"run.seed={a.seed}"]
    sets.append(f"cytology.root={a.data}" if a.data else "cytology.root=null")
    sets.append(f"histology.root={a.source}" if a.source else "histology.root=null")
    if a.gpu:
        sets.append("run.use_gpu=true")
    if a.epochs is not None:
        sets.append(f"cyclegan.epochs={a.epochs}")
    return load(TranslationConfig, a.config, sets + list(a.set))


def prepare_split(cfg, out: Path):
    """Load the data, make (or reuse) the split manifest in `out`, return (train, val, manifest)."""
    from ..data.source import load_split

    ds, manifest = load_split(cfg.data, out / "split.json")
    return ds.subset(manifest.indices("train")), ds.subset(manifest.indices("val")), manifest


def train_from_args(a: argparse.Namespace) -> int:
    import mlflow

    from ..config import to_dict
    from ..tracking.mlflow_utils import log_files, log_history, log_params_flat, setup
    from . import get_generator

    gen_cls = get_generator(a.generator)
    translation = getattr(gen_cls, "needs_source_domain", False)
    if getattr(a, "source", None) and not translation:
        from ..config import ConfigError

        raise ConfigError(f"--source is the histology domain of a translation generator (cyclegan); {a.generator} takes --data only")
    cfg = load_translation_config(a) if translation else load_train_config(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if translation:  # two domains, each with its own manifest in `out`
        from .cyclegan import domain_splits

        pairs, split_key = domain_splits(cfg, out)
        train, val = pairs["train"], pairs["val"]
        manifests = [out / "histology_split.json", out / "cytology_split.json"]
        print(f"[data] histology train {train.source.counts()} → cytology train {train.target.counts()} (splits {split_key})",
              file=sys.stderr)  # fmt: skip
    else:
        train, val, manifest = prepare_split(cfg, out)
        split_key, manifests = manifest.hash, [out / "split.json"]
        print(f"[data] {manifest.source}: train {train.counts()} val {val.counts()} (split {split_key})", file=sys.stderr)
    uri = setup("cytoray-train", a.tracking_uri)
    t0 = time.perf_counter()
    with mlflow.start_run(run_name=f"train-{a.generator}-{split_key}"):
        log_params_flat({"generator": a.generator, **to_dict(cfg), "split_hash": split_key})
        bundle, stages = gen_cls.train(train, val, cfg, out, out / "stages", split_key)
        for label, res in stages.items():
            log_history(label, res.history)
            log_files(res.grids(), f"samples/{label}")
        for m in manifests:
            mlflow.log_artifact(str(m))
        mlflow.log_metric("train_seconds", time.perf_counter() - t0)
    print(f"trained {a.generator} in {time.perf_counter() - t0:.0f}s → {bundle} (MLflow: mlflow ui --backend-store-uri {uri})")
    for label, res in stages.items():
        h = res.history
        first, last = h[0], h[-1]
        print(f"  {label:<22} loss_g {first['loss_g']:.3f} → {last['loss_g']:.3f}  loss_d {first['loss_d']:.3f} → {last['loss_d']:.3f}"
              + ("  (cached)" if res.cached else f"  {res.seconds:.0f}s"))
    return 0
