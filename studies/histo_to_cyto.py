"""Histology → cytology (Dey et al.): per-class CycleGAN vs neural style transfer, FID/KID per class.

    python studies/histo_to_cyto.py                      # embedded data, ~12-15 min on 2 CPUs
    python studies/histo_to_cyto.py --histology /data/breakhis --cytology /data/jucyt --set nst.vgg_weights=/w/vgg19.pth
    python studies/histo_to_cyto.py --search             # Tune + Optuna (configs/search/histo_to_cyto.yaml), validation FID
    python studies/histo_to_cyto.py --smoke-test         # tiny end-to-end run (~1-2 min)
    mlflow ui --backend-store-uri sqlite:///mlflow.db

Three rows, each against the cytology TEST split, from the same held-out histology test images:
real histology (baseline), CycleGAN G(histology), NST(histology). Writes fid_table.md/.csv and
grids/*.png to --out and logs all of it to one MLflow parent run (search trials as children).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from cytoray.config import deep_merge, from_dict, load, to_dict
from cytoray.errors import ConfigError, CytorayError
from cytoray.generators.cyclegan import CycleGAN, DomainPair, TranslationConfig, domain_splits
from cytoray.generators.nst import NST
from cytoray.io import save_png, stable_hash, write_text
from cytoray.metrics.fidelity import cached_features, extractor_identity, per_class

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["histology.size=32", "cytology.size=32", "histology.sim_n=40", "cytology.sim_n=40", "cyclegan.epochs=2",
         "cyclegan.g_base=8", "cyclegan.d_base=8", "cyclegan.n_blocks=2", "nst.steps=5", "run.sample_every=1"]


@dataclasses.dataclass
class SearchConfig:
    num_samples: int = 8  # Optuna trials
    seed: int = 0  # seeds the Optuna TPE sampler
    metric: list[str] = dataclasses.field(default_factory=list)  # objectives (validation FID only)
    mode: list[str] = dataclasses.field(default_factory=list)
    space: dict[str, dict] = dataclasses.field(default_factory=dict)  # "section.key": {type, low, high}

    def validate(self) -> None:
        if len(self.metric) != len(self.mode) or not self.metric or set(self.mode) - {"min", "max"}:
            raise ConfigError(f"metric {self.metric} / mode {self.mode}: give one min|max mode per metric")
        if any("_val_" not in m for m in self.metric):
            raise ConfigError(f"metric {self.metric}: a search is scored on the validation split only (*_val_*)")
        for k, v in self.space.items():
            if k.split(".")[0] not in ("cyclegan", "nst") or v.get("type") not in ("uniform", "loguniform"):
                raise ConfigError(f"space.{k}: expected cyclegan.*|nst.* with type uniform|loguniform, low, high")


def translations(pair: DomainPair, cg: CycleGAN, nst: NST) -> dict[str, dict[str, np.ndarray]]:
    """The three rows, each from the same source histology images, class by class."""
    src = {c: pair.source.images[pair.source.labels == i] for i, c in enumerate(pair.source.class_names)}
    return {"histology": src, "cyclegan": {c: cg.translate(x, c) for c, x in src.items()},
            "nst": {c: nst.translate(x, c, seed=i) for i, (c, x) in enumerate(src.items())}}


def fidelity(rows: dict, ref, split: str, key: str, cache: Path) -> dict[str, dict[str, float]]:
    real = {c: cached_features(ref.images[ref.labels == i], f"cytology:{key}:{split}:{c}", cache)
            for i, c in enumerate(ref.class_names)}
    return {row: per_class({}, fakes, split, real_features=real) for row, fakes in rows.items()}


def train_both(cfg: TranslationConfig, data: dict, out: Path, cache: Path, key: str) -> tuple[CycleGAN, NST, dict]:
    """Bundles in `out`; CycleGAN stages in the shared `cache` (the final run reuses the best trial's)."""
    cg_dir, stages = CycleGAN.train(data["train"], data["val"], cfg, out / "cyclegan", cache, key)
    nst_dir, _ = NST.train(data["train"], data["val"], cfg, out / "nst", cache, key)
    return CycleGAN.load(cg_dir), NST.load(nst_dir), stages


def trial(params: dict, cfg: TranslationConfig, data: dict, out: str, key: str) -> None:
    """One Tune trial: train with `params`, report FID against the cytology VALIDATION split."""
    from ray import tune

    cfg = with_params(cfg, params)
    cg, nst, _ = train_both(cfg, data, Path(out) / "search" / stable_hash(params), Path(out) / "stages", key)
    fids = fidelity(translations(data["val"], cg, nst), data["val"].target, "val", key, Path(out) / "features")
    tune.report({f"{row}/{k}": v for row, m in fids.items() for k, v in m.items()})


def with_params(cfg: TranslationConfig, params: dict) -> TranslationConfig:
    """`cfg` with {"section.key": value} applied (validated like a config file)."""
    over: dict = {}
    for k, v in params.items():
        section, name = k.split(".")
        over.setdefault(section, {})[name] = v
    return from_dict(TranslationConfig, deep_merge(to_dict(cfg), over), "search trial")


def search(cfg: TranslationConfig, data: dict, out: Path, key: str, space_file: Path, n: int | None) -> tuple[TranslationConfig, list]:
    """Tune + Optuna (seeded TPE, multi-objective): best CycleGAN and best NST settings by validation FID."""
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from cytoray.distributed.runner import init_ray

    s = load(SearchConfig, space_file, [f"num_samples={n}"] if n else [])
    init_ray()
    space = {k: getattr(tune, v["type"])(v["low"], v["high"]) for k, v in s.space.items()}
    tuner = tune.Tuner(
        tune.with_parameters(trial, cfg=cfg, data=data, out=str(out.resolve()), key=key), param_space=space,
        tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric=s.metric, mode=s.mode, seed=s.seed),
                                    num_samples=s.num_samples, max_concurrent_trials=1),
        run_config=tune.RunConfig(name=f"search-{key}-{stable_hash(to_dict(s))}", storage_path=str((out / "tune").resolve())),
    )  # fmt: skip
    results = [r for r in tuner.fit() if r.error is None and r.metrics]
    if not results:
        raise CytorayError(f"{out / 'tune'}: every search trial failed; see the Ray log above")
    best = {}
    for metric, mode in zip(s.metric, s.mode):  # the objectives' parameters are disjoint: take each one's best
        r = (min if mode == "min" else max)(results, key=lambda r: r.metrics[metric])
        prefix = metric.split("/")[0]
        best.update({k: v for k, v in r.config.items() if k.startswith(prefix)})
    print(f"[search] best by validation FID: {best}", file=sys.stderr)
    return with_params(cfg, best), results


def start_run(name: str, parent: str | None = None):
    """An MLflow run by name; a rerun logs into the earlier one instead of adding a duplicate."""
    import mlflow

    f = f"tags.mlflow.runName = '{name}'" + (f" and tags.mlflow.parentRunId = '{parent}'" if parent else "")
    old = mlflow.search_runs(filter_string=f, max_results=1, output_format="list")
    return mlflow.start_run(run_id=old[0].info.run_id if old else None, run_name=None if old else name, nested=bool(parent))


def table(fids: dict, classes: list[str], labels: dict[str, str]) -> tuple[str, str]:
    cols = [*classes, "all"]
    head = ["row", *(f"FID {c}" for c in cols), *(f"KID {c}" for c in cols)]
    md = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    csv = [",".join(["row", *(f"fid_{c}" for c in cols), *(f"kid_{c}" for c in cols), *(f"kid_std_{c}" for c in cols)])]
    for row, m in fids.items():
        fid = [m[f"fid_test_inception/{c}"] for c in cols]
        kid = [(m[f"kid_test_inception_mean/{c}"], m[f"kid_test_inception_std/{c}"]) for c in cols]
        md.append("| " + " | ".join([labels[row], *(f"{v:.1f}" for v in fid), *(f"{a:.4f} ± {b:.4f}" for a, b in kid)]) + " |")
        csv.append(",".join([f'"{labels[row]}"', *(f"{v:.4f}" for v in fid), *(f"{a:.6f}" for a, _ in kid), *(f"{b:.6f}" for _, b in kid)]))
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def grid_png(rows: dict, cls: str, labels: dict[str, str], k: int = 8) -> np.ndarray:
    """source | CycleGAN | NST, one row each, with a header naming them (and the NST features)."""
    from PIL import Image, ImageDraw

    body = np.concatenate([np.concatenate(list(rows[r][cls][:k]), 1) for r in ("histology", "cyclegan", "nst")], 0)
    canvas = Image.new("RGB", (max(body.shape[1], 560), body.shape[0] + 14), "white")
    canvas.paste(Image.fromarray(body), (0, 14))
    ImageDraw.Draw(canvas).text((2, 1), f"{cls}: " + " | ".join(labels[r] for r in ("histology", "cyclegan", "nst")), fill="black")
    return np.asarray(canvas)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--histology", help="histology folder <dir>/<class>/*.png (BreakHis); default: embedded simulator")
    ap.add_argument("--cytology", help="cytology folder <dir>/<class>/*.png (JUCYT); default: embedded simulator")
    ap.add_argument("--config", default=str(ROOT / "configs/models/cyclegan.yaml"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. cyclegan.epochs=5")
    ap.add_argument("--search", action="store_true", help="Tune + Optuna over λ_cyc, identity and NST weights first")
    ap.add_argument("--search-space", default=str(ROOT / "configs/search/histo_to_cyto.yaml"))
    ap.add_argument("--out", default="runs/histo_to_cyto")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--smoke-test", action="store_true", help="tiny images, 2 epochs, 5 L-BFGS steps")
    a = ap.parse_args()
    import mlflow

    from cytoray.tracking.mlflow_utils import log_files, log_history, log_params_flat, setup

    # 1. Config and data: both domains validated and split before anything trains.
    sets = list(SMOKE if a.smoke_test else [])
    sets += [f"{d}.root={getattr(a, d)}" for d in ("histology", "cytology") if getattr(a, d)]
    cfg = load(TranslationConfig, a.config, sets + a.set)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data, key = domain_splits(cfg, out)
    uri = setup("cytoray-histo-to-cyto", a.tracking_uri)
    with start_run(f"histo_to_cyto-{key}-{stable_hash(to_dict(cfg))}" + "-search" * a.search) as parent:
        # 2. Optional search on validation FID; then train CycleGAN (per class) and set up NST.
        if a.search:
            cfg, results = search(cfg, data, out, key, Path(a.search_space), 2 if a.smoke_test else None)
            for i, r in enumerate(results):
                with start_run(f"trial-{i:03d}", parent.info.run_id):
                    log_params_flat(r.config)
                    mlflow.log_metrics({k: v for k, v in r.metrics.items() if k.startswith(("cyclegan/", "nst/"))})
        cg, nst, stages = train_both(cfg, data, out, out / "stages", key)
        labels = {"histology": "real histology", "cyclegan": "CycleGAN G(histology)", "nst": f"NST [{nst.features}]"}
        log_params_flat({**to_dict(cfg), "nst.features": nst.features, "split_key": key, **extractor_identity()})
        for label, res in stages.items():
            log_history(label, res.history)
            log_files(res.grids(), f"samples/{label}")
        # 3. The three rows against the cytology TEST split (touched once, here).
        rows = translations(data["test"], cg, nst)
        fids = fidelity(rows, data["test"].target, "test", key, out / "features")
        md, csv = table(fids, list(data["test"].target.class_names), labels)
        n = data["test"].source.counts()
        md = (f"FID/KID vs real cytology (test split, {n} images per class per row; NST features: {nst.features}; "
              f"{extractor_identity()['feature_extractor']})\n\n{md}")
        write_text(out / "fid_table.md", md)
        write_text(out / "fid_table.csv", csv)
        for c in data["test"].target.class_names:
            save_png(out / "grids" / f"{c}.png", grid_png(rows, c, labels))
        for row, m in fids.items():
            mlflow.log_metrics({f"{row}/{k}": v for k, v in m.items()})
        log_files([out / "fid_table.md", out / "fid_table.csv", *sorted((out / "grids").glob("*.png"))], "results")
    print(md)
    print(f"results in {out}/ (fid_table.md, grids/); browse: mlflow ui --backend-store-uri {uri}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CytorayError as e:
        sys.exit(f"histo_to_cyto: error: {e}")
