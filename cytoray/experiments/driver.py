"""The one study driver: Ray Tune + Optuna (+ ASHA) trials, one MLflow writer, one final test.

Every study kind (ratio, stabilisers, baselines, histology→cytology) is a `Study` with a typed
Config; `run_study` does the rest the same way for all of them:

1. checks and data before Ray starts (a bad key, folder or split fails here, with nothing trained);
2. the MLflow parent run (reused on `--resume`; this process is the only writer);
3. trials as Tune driver functions (Train V2 pattern) that launch Ray Train jobs:
   an Optuna search over the YAML space (seeded TPE, multi-objective when asked, ASHA on the
   per-epoch validation metric), or a fixed grid of trials (the baselines' cells);
4. the best trial chosen on validation only; the study's `finish` then touches the test
   split once and writes its tables; artefacts go to the parent run.

A search point is merged into the config as nested values and validated like any config file.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from .. import process_env
from ..config import ConfigError, deep_merge, flatten, from_dict, to_dict
from ..errors import CytorayError
from ..metrics import names
from ..training.search import SearchSpace, load_search_space, nest, plain

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class TuneSettings:
    # YAML space; relative paths resolve from the repo root; null = no search
    search_space: str | None = None
    num_samples: int = 4  # trials the searcher proposes (CPU default: ~3 min a trial on 2 cores)
    max_concurrent: int = 1  # trials at once (each runs its own Ray Train jobs)
    seed: int = 0  # seeds the Optuna TPE sampler (same seed, same proposals)
    metric: str = names.VAL_BACC  # selection metric, measured on validation only
    mode: Literal["max", "min"] = "max"
    # also minimise fid_val_inception/all (Optuna multi-objective TPE)
    multi_objective: bool = False
    asha: bool = True  # ASHA early stopping on the classifier's per-epoch validation metric
    grace_period: int = 3  # classifier epochs before ASHA may stop a trial
    reduction_factor: int = 2  # ASHA keeps the top 1/reduction_factor at each rung
    trial_cpu: float = 0.1  # the trial driver's own share; its Ray Train workers reserve their own
    # score each trial on K seeded splits (data.split_seed
    # .. +K-1); the searcher and ASHA see the mean
    splits: int = 1

    def validate(self) -> None:
        if self.num_samples < 1 or self.max_concurrent < 1:
            raise ConfigError("tune.num_samples and tune.max_concurrent must be >= 1")
        if self.trial_cpu < 0:
            raise ConfigError(f"tune.trial_cpu={self.trial_cpu}: must be >= 0")
        import re

        if (
            not re.search(r"(^|_)val(_|/|$)", self.metric) or "test" in self.metric
        ):  # at config load: before split and run
            raise ConfigError(
                f"tune.metric={self.metric}: select on a validation metric (val_..., e.g. "
                "val_balanced_accuracy); the test split is read once, after the choice"
            )
        if self.splits < 1:
            raise ConfigError(f"tune.splits={self.splits}: score each trial on at least 1 split")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ConfigError("tune.grace_period must be >= 1 and tune.reduction_factor >= 2")


@dataclasses.dataclass(frozen=True)
class StudyContext:
    """Where a study writes and how it runs: handed to `setup`, every trial and `finish`."""

    out: Path  # the study folder (--out)
    cache: Path  # its bundle, stage and feature caches
    use_cache: bool = True  # False: --no-cache, every stage trains again
    t0: float = 0.0  # wall-clock start of the study (time.time())
    smoke: bool = False  # a --smoke-test run (never a registry champion)
    parent: str | None = None  # the MLflow parent run (set for `finish`)
    uri: str | None = None  # its tracking URI (set for `finish`)


class Study:
    """One kind of study. Methods run in the driver unless marked (trial: in a Tune trial)."""

    Config: ClassVar[type]
    experiment_default: ClassVar[str] = ""
    # its trials honour tune.splits > 1 (others refuse it, not ignore it)
    split_averaged: ClassVar[bool] = False

    def check(self, cfg) -> None:
        """Everything rejectable without data (policies, sizes): before anything is written."""

    def prepare(self, cfg, out: Path) -> Any:
        """Load, check and split the data (split manifests written to `out`); before Ray starts.
        Returns the study's own typed data (e.g. `RatioData`), handed to every method below."""
        raise NotImplementedError

    def setup(self, cfg, data: Any, ctx: StudyContext) -> None:
        """After Ray starts, before the trials (e.g. the baselines' generators, once per split)."""

    def grid(self, cfg, data: Any) -> list[dict] | None:
        """Fixed trials (each a `cell` mapping), or None for an Optuna search over the space."""
        return None

    def selection(self, cfg) -> tuple[str, str]:
        """The validation metric (and mode) that picks the best trial."""
        return cfg.tune.metric, cfg.tune.mode

    def objectives(self, cfg) -> tuple[list[str], list[str]]:
        """The searcher's metric(s) and mode(s)."""
        metric, mode = self.selection(cfg)
        return [metric], [mode]

    def asha_metric(self, cfg) -> tuple | None:
        """(metric, mode, max reports) when trials report as they go and ASHA may stop them, with an
        optional 4th item, the grace period in those reports (default tune.grace_period)."""
        return None

    def describe(self, config: dict) -> tuple[str, dict, dict]:
        """A trial's MLflow child run: (name, params, tags)."""
        params = {k: str(v)[:500] for k, v in flatten(config).items()}
        return "trial", params, {}

    def trial(self, cfg, cell: dict | None, data: Any, ctx: StudyContext) -> None:
        """(trial) One Tune trial: train, measure on validation, `ray.tune.report(...)`; the final
        report carries `final: 1`."""
        raise NotImplementedError

    def best(self, cfg, done, space: SearchSpace | None) -> dict:
        """The chosen trial's point (nested), by validation only."""
        metric, mode = self.selection(cfg)
        row = done.sort_values(metric, ascending=mode == "min").iloc[0]
        return point_of(row)

    def finish(self, cfg, best_cfg, data: Any, results, ctx: StudyContext) -> dict:
        """In the parent run: the test split once, tables, artefacts, registry. Returns the summary.
        `results` is Tune's frame of every trial (ASHA-stopped ones too), or None without trials."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- points


def resolve_file(path: str, what: str) -> Path:
    p = Path(path)
    for cand in (p, Path.cwd() / p, REPO / p):
        if cand.is_file():
            return cand
    raise CytorayError(f"{what}: {path} not found (looked in the working directory and {REPO})")


def clean(point: Any) -> Any:
    """A sampled point as plain nested values (numpy scalars unwrapped, q-noise rounded)."""
    if isinstance(point, dict):
        return {k: clean(v) for k, v in point.items()}
    return plain(point)


def point_of(row) -> dict:
    """A result row's trial config ('config/a/b' columns) as a nested mapping."""
    flat = {
        k[len("config/") :].replace("/", "."): row[k] for k in row.index if k.startswith("config/")
    }
    return clean(nest(flat))


def trial_config(study: Study, base: dict, point: dict):
    """The trial's typed config: the point's values (not its `cell`) merged in, validated."""
    over = {k: v for k, v in clean(point).items() if k != "cell"}
    return from_dict(study.Config, deep_merge(base, over), "search point")


def trial_fn(
    point: dict, *, study: Study, base: dict, data: Any, plugins: dict, ctx: StudyContext
) -> None:
    from ..generators.base import register_classes

    register_classes(plugins)  # generators defined outside cytoray arrive by value
    cfg = trial_config(study, base, point)
    # The trial's own work (sampling, FID/KID, filtering) runs between its Ray Train jobs, on the
    # CPUs they reserve: Ray gives a trial process one thread (2x slower FID/KID on 2 cores).
    run = getattr(cfg, "run", None)
    if run is not None:
        import torch

        torch.set_num_threads(max(1, run.cpus_per_worker))
    study.trial(cfg, point.get("cell"), data, ctx)


def _plugins() -> dict:
    """Generator classes a Tune trial's process would not find by `discover()` (it knows only what
    it imports): those defined outside cytoray, and those of a module discovery skips (a name
    starting with "_", such as the template)."""
    from ..generators.base import GENERATORS, discover, discovered_module
    from ..training.runner import ship_by_value

    discover()
    out = {name: cls for name, cls in GENERATORS.items() if not discovered_module(cls.__module__)}
    for cls in out.values():
        ship_by_value(cls)
    return out


# ----------------------------------------------------------------------------- the driver


def run_study(
    study: Study,
    cfg,
    out: Path,
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    resume: bool = False,
    use_cache: bool = True,
    smoke: bool = False,
) -> dict:
    t0 = time.perf_counter()
    out = Path(out).resolve()
    # 1. Everything checkable before any job: config, search space, data, splits.
    study.check(cfg)
    if getattr(getattr(cfg, "tune", None), "splits", 1) > 1 and not study.split_averaged:
        raise ConfigError(
            f"tune.splits={cfg.tune.splits}: this study does not average its trials over splits "
            "(the ratio and stabiliser studies do); leave tune.splits at 1"
        )
    from ..io import safe_component

    try:  # the name is a folder under --out (Tune's state) and an MLflow experiment
        safe_component(cfg.name, "name")
    except CytorayError:
        raise ConfigError(
            f"name={cfg.name!r}: the study's name becomes a folder under --out; give a plain name "
            "(no '/', not '.' or '..')"
        ) from None
    if resume:  # Tune's pickles are checked before anything else runs (tune_state.py)
        from .tune_state import verify_tune_state

        verify_tune_state(out / "tune" / cfg.name)
    ray_address = address or os.environ.get("RAY_ADDRESS")
    # a Ray head that does not answer, or is not Ray: named in seconds, before anything is written
    if ray_address:
        from ..training.runner import check_address
        from .preflight import check_ray_head

        check_address(ray_address)
        check_ray_head(ray_address)
    from .preflight import check_class_names, check_storage, check_store_space

    check_storage(getattr(cfg, "run", None))
    # a full disk under the sqlite store: named before the split and the cache
    check_store_space(tracking_uri)
    check_class_names(getattr(getattr(cfg, "data", None), "root", None))
    space = (
        load_search_space(resolve_file(cfg.tune.search_space, "tune.search_space"), cfg)
        if cfg.tune.search_space
        else None
    )
    out.mkdir(parents=True, exist_ok=True)
    with hold_study_lock(
        out
    ):  # one study per --out (a second one, or a --resume while it runs, is refused)
        return _run_locked(
            study,
            cfg,
            out,
            space,
            t0,
            tracking_uri=tracking_uri,
            address=address,
            resume=resume,
            use_cache=use_cache,
            smoke=smoke,
        )


def _run_locked(
    study: Study,
    cfg,
    out: Path,
    space,
    t0: float,
    *,
    tracking_uri,
    address,
    resume,
    use_cache,
    smoke,
) -> dict:
    import mlflow

    from ..tracking.mlflow_utils import RetryingClient, setup
    from ..tracking.study_logger import find_or_create_parent

    data = study.prepare(cfg, out)
    grid = study.grid(cfg, data)
    ctx = StudyContext(out, out / "cache", use_cache, time.time(), smoke)

    # 2. MLflow: the study's parent run (reused on resume); this process is the only writer.
    uri = setup(cfg.name, tracking_uri)
    pin_segmenters(cfg, out / "cache")  # from this store, before any trial (trials run elsewhere)
    exp_id = mlflow.get_experiment_by_name(cfg.name).experiment_id
    client = RetryingClient(uri)  # the parent run's writes ride out a server restart
    parent = find_or_create_parent(client, exp_id, cfg.name, str(out), resume)
    if not client.get_run(parent).data.params:
        for k, v in flatten(to_dict(cfg)).items():
            client.log_param(parent, k, str(v)[:500])
    try:
        # 3. Trials (none when there is neither a space nor a grid:
        # the base config goes straight to 4.)
        from ..training.runner import init_ray

        init_ray(address)
        study.setup(cfg, data, ctx)
        results = (
            _tune(study, cfg, space, grid, data, ctx, out, uri, exp_id, parent, resume)
            if (space or grid)
            else None
        )
        # 4. The best configuration (validation only), then the study's test evaluation, once.
        best_cfg = cfg
        if results is not None and space is not None:
            best_cfg = trial_config(
                study, to_dict(cfg), study.best(cfg, finished(results, cfg.name, out), space)
            )
        with mlflow.start_run(run_id=parent):
            summary = study.finish(
                cfg, best_cfg, data, results, dataclasses.replace(ctx, parent=parent, uri=uri)
            )
            mlflow.log_metric("study_seconds", time.perf_counter() - t0)
            # 5. The report (HTML + figures, built from what MLflow
            # recorded), logged to the parent run.
            from ..report import study_report

            summary["report"] = study_report(cfg.name, uri, parent, out / "report")
    except KeyboardInterrupt:
        client.set_terminated(parent, "KILLED")
        raise
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    client.set_terminated(parent, "FINISHED")
    return {
        **summary,
        "uri": uri,
        "parent": parent,
        "out": str(out),
        "seconds": time.perf_counter() - t0,
        "n_trials": 0 if results is None else len(results),
    }


def _tune(study: Study, cfg, space, grid, data, ctx, out: Path, uri, exp_id, parent, resume: bool):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from ..quiet import tune_verbosity
    from ..tracking.study_logger import MlflowStudyCallback
    from .progress import TrialProgress
    from .tune_state import record_tune_state, verify_tune_state

    # state saved every 2 s; Ctrl-C stops the study at once and --resume goes on (process_env.py)
    process_env.ensure("tune")
    t = cfg.tune
    # A trial's placement group needs a non-empty bundle:
    # with no CPU share, it asks for one byte of memory.
    resources = {"cpu": t.trial_cpu} if t.trial_cpu > 0 else {"cpu": 0, "memory": 1}
    trainable = tune.with_resources(
        tune.with_parameters(
            trial_fn, study=study, base=to_dict(cfg), data=data, plugins=_plugins(), ctx=ctx
        ),
        resources,
    )
    callback = MlflowStudyCallback(uri, exp_id, parent, study.describe)
    # One line per trial start/end (k of N, settings, figures, ETA)
    # instead of Tune's box tables (verbose=0 unless --verbose).
    progress = TrialProgress(study.describe, study.objectives(cfg)[0], t.max_concurrent)
    exp_dir = out / "tune" / cfg.name
    if resume and tune.Tuner.can_restore(str(exp_dir)):
        print(f"[study] resuming {exp_dir}", file=sys.stderr)
        verify_tune_state(exp_dir)  # again, right before the unpickling
        tuner = tune.Tuner.restore(
            str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        asha = study.asha_metric(cfg) if t.asha else None
        sched = (
            ASHAScheduler(
                time_attr="training_iteration",
                metric=asha[0],
                mode=asha[1],
                max_t=asha[2],
                grace_period=asha[3] if len(asha) > 3 else t.grace_period,
                reduction_factor=t.reduction_factor,
            )
            if asha
            else None
        )
        if grid is not None:
            param_space = {"cell": tune.grid_search(grid)}
            tune_cfg = tune.TuneConfig(
                search_alg=BasicVariantGenerator(max_concurrent=t.max_concurrent),
                scheduler=sched,
                num_samples=1,
            )
        else:
            metric, mode = study.objectives(cfg)
            searcher = OptunaSearch(
                metric=metric if len(metric) > 1 else metric[0],
                mode=mode if len(mode) > 1 else mode[0],
                seed=t.seed,
            )
            param_space = space.to_tune()
            tune_cfg = tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=t.max_concurrent),
                scheduler=sched,
                num_samples=t.num_samples,
            )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune_cfg,
            run_config=tune.RunConfig(
                name=cfg.name,
                storage_path=str(out / "tune"),
                callbacks=[callback, progress],
                verbose=tune_verbosity(),
                failure_config=tune.FailureConfig(max_failures=cfg.run.max_failures),
            ),
        )
    record_tune_state(exp_dir)  # the tuner.pkl Tune just wrote is the one --resume may unpickle
    df = tuner.fit().get_dataframe()
    finished(df, cfg.name, out)  # none finished: say so here
    return df


def pin_segmenters(cfg, cache: Path) -> None:
    """Every `masks.segmenter` in the config (a generator's, nested or in a mapping) replaced, in
    place, by the absolute folder its trials load (masks/segmenter.py: study_segmenter)."""
    from ..masks.config import SEGMENTER, MasksConfig
    from ..masks.segmenter import study_segmenter

    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        for item in v.values() if isinstance(v, dict) else [v]:
            if isinstance(item, MasksConfig) and item.method == SEGMENTER and item.segmenter:
                item.segmenter = study_segmenter(item.segmenter, cache)
            elif dataclasses.is_dataclass(item):
                pin_segmenters(item, cache)


def hold_study_lock(out: Path):
    """An exclusive lock on `<out>/.study.lock` for this process's life (or until closed); a second
    holder gets a one-line error naming the first (pid, host, start)."""
    import fcntl
    import json
    import socket

    f = open(out / ".study.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        try:
            who = json.loads(f.read() or "{}")
        except ValueError:
            who = {}
        f.close()
        raise CytorayError(
            f"{out}: another study is running in this folder (pid "
            f"{who.get('pid', '?')} on {who.get('host', '?')} since "
            f"{who.get('started', '?')}); wait for it or choose another --out"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(
        json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
        )
    )
    f.flush()
    return f


def finished(df, name: str, out: Path):
    """The trials that reported their final result (`final: 1`)."""
    done = df[df[names.FINAL] == 1] if names.FINAL in df else df.iloc[0:0]
    if done.empty:
        raise CytorayError(
            f"no trial of {name} finished; see the errors above and {out / 'tune' / name}"
        )
    return done
