"""Run (or resume) a search study: the driver side of `distributed/study.py`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..config import flatten, to_dict
from ..errors import CytorayError
from ..io import write_json, write_text
from .study import FID_ALL, RatioStudyConfig, apply_point, generator_key, trial_fn

REPO = Path(__file__).resolve().parents[2]


def _resolve(path: str) -> Path:
    p = Path(path)
    for cand in (p, Path.cwd() / p, REPO / p):
        if cand.is_file():
            return cand
    raise CytorayError(f"tune.search_space: {path} not found (looked in the working directory and {REPO})")


def run_study(cfg: RatioStudyConfig, out: Path, *, tracking_uri: str | None = None, address: str | None = None,
              resume: bool = False, use_cache: bool = True) -> dict:  # fmt: skip
    import mlflow
    from mlflow import MlflowClient
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from ..data.source import load_split
    from ..tracking.mlflow_utils import setup
    from ..tracking.study_logger import MlflowStudyCallback, find_or_create_parent
    from .runner import init_ray
    from .search import load_search_space

    t0 = time.perf_counter()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # 1. Everything checkable before any job: search space, data, split (reused on resume).
    space = load_search_space(_resolve(cfg.tune.search_space), cfg)
    ds, man = load_split(cfg.data, out / "split.json")
    train, val, test = (ds.subset(man.indices(s)) for s in ("train", "val", "test"))
    print(f"[study] {cfg.name}: {ds.source} train {train.counts()} val {val.counts()} test {test.counts()} (split {man.hash})", file=sys.stderr)

    # 2. MLflow: the study's parent run (reused on resume); this process is the only writer.
    uri = setup(cfg.name, tracking_uri)
    exp_id = mlflow.get_experiment_by_name(cfg.name).experiment_id
    client = MlflowClient(tracking_uri=uri)
    parent = find_or_create_parent(client, exp_id, cfg.name, str(out), resume)
    if not client.get_run(parent).data.params:
        for k, v in flatten({**to_dict(cfg), "split_hash": man.hash}).items():
            client.log_param(parent, k, str(v)[:500])

    # 3. Tune + Optuna (+ ASHA): trials are driver functions that launch Ray Train jobs.
    init_ray(address)
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # experiment state saved often: SIGKILL loses little
    base = to_dict(cfg)
    data = {"train": train, "val": val, "cache": str(out / "cache"), "split_hash": man.hash, "use_cache": use_cache}
    trainable = tune.with_resources(tune.with_parameters(trial_fn, base=base, overrides_of=space.overrides, data=data),
                                    {"cpu": cfg.tune.trial_cpu})  # fmt: skip
    callback = MlflowStudyCallback(uri, exp_id, parent, lambda c: dict(o.split("=", 1) for o in space.overrides(c)))
    exp_dir = out / "tune" / cfg.name
    if resume and tune.Tuner.can_restore(str(exp_dir)):
        print(f"[study] resuming {exp_dir}", file=sys.stderr)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        t = cfg.tune
        metric, mode = ([FID_ALL, t.metric], ["min", t.mode]) if t.multi_objective else (t.metric, t.mode)
        searcher = ConcurrencyLimiter(OptunaSearch(metric=metric, mode=mode, seed=t.seed), max_concurrent=t.max_concurrent)
        sched = ASHAScheduler(time_attr="training_iteration", metric=t.metric, mode=t.mode, max_t=cfg.classifier.epochs + 1,
                              grace_period=t.grace_period, reduction_factor=t.reduction_factor) if t.asha else None  # fmt: skip
        tuner = tune.Tuner(
            trainable,
            param_space=space.to_tune(),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=sched, num_samples=t.num_samples),
            run_config=tune.RunConfig(name=cfg.name, storage_path=str(out / "tune"), callbacks=[callback], verbose=1),
        )
    grid = tuner.fit()

    # 4. The best configuration (validation only), then its test split, once.
    df = grid.get_dataframe()
    done = df[df.get("final", 0) == 1] if "final" in df else df.iloc[0:0]
    if done.empty:
        raise CytorayError(f"no trial of {cfg.name} finished; see the errors above and {exp_dir}")
    best_row = done.sort_values(cfg.tune.metric, ascending=cfg.tune.mode == "min").iloc[0]
    best_cfg = apply_point(base, space.overrides({k[len("config/"):]: best_row[k] for k in df if k.startswith("config/")}))
    if cfg.objective == "classifier":
        test_metrics, clf_bundle = _final_test(best_cfg, train, val, test, out, man.hash, use_cache)
    else:  # fidelity: the chosen generator against the test split, once
        from ..generators import get_generator
        from .study import fidelity

        sampler = get_generator(best_cfg.generator).load(best_row["bundle"])
        test_metrics = fidelity(sampler, test, "test", best_cfg.fid_per_class, best_cfg.run.seed, out / "cache" / "features",
                                man.hash, best_cfg.masks.source)  # fmt: skip
        clf_bundle = None
    table = _trials_table(df, space, cfg.tune.metric, cfg.tune.mode)
    write_text(out / "trials.md", table + "\n")
    write_json(out / "best.json", {"trial_id": best_row["trial_id"], "config": to_dict(best_cfg), "test": test_metrics,
                                   "split_hash": man.hash, "bundle": best_row["bundle"]})  # fmt: skip
    with mlflow.start_run(run_id=parent):
        mlflow.log_metrics({f"best_test_{k}": float(v) for k, v in test_metrics.items() if isinstance(v, float)})
        mlflow.log_metrics({f"best_{cfg.tune.metric}": float(best_row[cfg.tune.metric]), "study_seconds": time.perf_counter() - t0})
        mlflow.set_tag("cytoray.best_trial", best_row["trial_id"])
        for f in ("trials.md", "best.json", "split.json"):
            mlflow.log_artifact(str(out / f))
        promoted = _register(cfg, best_row["bundle"], clf_bundle, test_metrics, man.hash) if cfg.register else {}
    client.set_terminated(parent, "FINISHED")
    return {"table": table, "test": test_metrics, "best": best_row.to_dict(), "uri": uri, "parent": parent,
            "registered": promoted, "seconds": time.perf_counter() - t0, "n_trials": len(df)}  # fmt: skip


def _final_test(cfg, train, val, test, out: Path, split_hash: str, use_cache: bool):
    """The chosen configuration's classifier (cache hit) scored on the test split once."""
    from ..classify.bundle import write_classifier_bundle
    from ..classify.policies import compose_training_set
    from ..classify.train import train_classifier
    from ..generators import get_generator
    from ..metrics.classification import SCORES, classification_metrics

    gen_cls = get_generator(cfg.generator)
    sampler = gen_cls.load(out / "cache" / "bundles" / f"{cfg.generator}-{generator_key(cfg)}")
    tr = compose_training_set(cfg.policy, train, cfg.ratio, {cfg.generator: sampler}, rng_seed=cfg.run.seed, augment=cfg.classifier.augment)
    res = train_classifier(tr, val, test, cfg.classifier, label=f"clf-{cfg.classifier.name}", cache_root=out / "cache",
                           data_key=split_hash, run_cfg=cfg.run, seed=cfg.run.seed, use_cache=True)  # fmt: skip
    m = classification_metrics(res.test_labels, res.test_prob, list(train.class_names))
    metrics = {k: float(m[k]) for k in SCORES}
    size = cfg.classifier.check_size(int(train.images.shape[1]))
    bundle = write_classifier_bundle(out / "best_classifier", res.model_state, name=cfg.classifier.name,
                                     class_names=train.class_names, input_size=size, params=res.params)  # fmt: skip
    return metrics, bundle


def _register(cfg, gen_bundle: str, clf_bundle: Path | None, test: dict, split_hash: str) -> dict:
    from ..classify.registry_model import ClassifierModel
    from ..tracking.registry import register

    proto = f"split:{split_hash}"
    if clf_bundle is None:  # fidelity study: the generator, judged by test FID (lower is better)
        metric, score, higher, todo = "fid_test_inception/all", test["fid_test_inception/all"], False, [(cfg.generator, gen_bundle, None)]
    else:
        metric, score, higher = "test_balanced_accuracy", test["balanced_accuracy"], True
        todo = [(cfg.generator, gen_bundle, None), (f"{cfg.generator}-classifier", clf_bundle, ClassifierModel())]
    out = {}
    for name, path, model in todo:
        version, promoted = register(name, path, score=score, protocol=proto, metric=metric, higher_is_better=higher, python_model=model)
        out[name] = {"version": version, "champion": promoted}
        print(f"[registry] {name} v{version}" + (" is the new champion" if promoted else " (champion kept)"), file=sys.stderr)
    return out


def _trials_table(done, space, metric: str, mode: str) -> str:
    """Every trial, best first; a trial ASHA stopped shows its last validation figure and epoch."""
    keys = list(space.space)
    shown = list(dict.fromkeys(m for m in (metric, FID_ALL, "fid_val_mask_inception/all") if m in done))
    cols = ["trial_id", "status", *keys, *shown, "generator_cached", "trial_seconds"]
    done = done.assign(status=[("finished" if r.get("final") == 1 else f"stopped at epoch {int(r.get('epoch', 0)) + 1}")
                               for _, r in done.iterrows()])  # fmt: skip
    rows = done.sort_values(metric, ascending=mode == "min")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in rows.iterrows():
        vals = [r["trial_id"], r["status"]] + [r.get(f"config/{k}") for k in keys] + [r.get(m) for m in shown] + [r.get("generator_cached"), r.get("trial_seconds")]
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in vals) + " |")
    return "\n".join(lines)
