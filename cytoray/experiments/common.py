"""What every study does with a generator: train it once (bundle cache), measure it (FID/KID).

`train_generator` keys a trained bundle by the hash of the generator's whole config, its data
and its seed; trials that share those share the bundle (and, inside it, stages that match:
`training/runner.py`). A lock file keeps two concurrent trials from training one bundle twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..data.folder import ImageSet
from ..generators.base import BUNDLE_META, Generator, GeneratorConfig
from ..metrics import names

FID_ALL = names.FID_VAL


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing), released when the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def bundle_dir(
    gen_cls: type[Generator], cfg: GeneratorConfig, data_key: str, cache: Path, seed: int
) -> Path:
    """Where the bundle of these settings, data and seed lives in the bundle cache."""
    return Path(cache) / "bundles" / f"{gen_cls.name}-{gen_cls.bundle_key(cfg, data_key, seed)}"


def train_generator(
    gen_cls: type[Generator],
    cfg: GeneratorConfig,
    train,
    val,
    data_key: str,
    cache: Path,
    run,
    use_cache: bool = True,
) -> tuple[Generator, Path, bool]:
    """The trained generator for these settings and data: (sampler, bundle folder, was cached).

    `train`/`val` are ImageSets, or DomainPairs for a generator that consumes two domains.
    """
    import json

    dest = bundle_dir(gen_cls, cfg, data_key, cache, run.seed)
    with file_lock(dest.parent / f"{dest.name}.lock"):
        if use_cache and (dest / BUNDLE_META).is_file():
            for label in json.loads((dest / BUNDLE_META).read_text()).get("stages", []):
                print(f"[cache] {label}: reusing bundle {dest}", file=sys.stderr, flush=True)
            return gen_cls.load(dest), dest, True
        bundle, stages = gen_cls.train(
            train, val, cfg, dest, cache, data_key, run, use_cache=use_cache
        )
    return gen_cls.load(bundle), bundle, bool(stages) and all(s.cached for s in stages.values())


def train_generators(
    gen_cls: type[Generator],
    jobs: dict[str, tuple],
    cache: Path,
    run,
    use_cache: bool = True,
) -> dict[str, Path]:
    """`train_generator` for several settings or data at once: {key: (config, train, val, data
    key)} → {key: bundle folder}. Bundles already in the bundle cache are reused; every other one
    trains in ONE Ray Train job (`Generator.train_many`: start-up paid once)."""
    from ..generators.base import TrainJob

    dests = {k: bundle_dir(gen_cls, c, dk, cache, run.seed) for k, (c, _, _, dk) in jobs.items()}
    with contextlib.ExitStack() as locks:  # sorted: two studies never wait on each other's locks
        for d in sorted(set(dests.values())):
            locks.enter_context(file_lock(d.parent / f"{d.name}.lock"))
        todo, first = {}, {}
        for k, (c, tr, va, dk) in jobs.items():
            if use_cache and (dests[k] / BUNDLE_META).is_file():
                print(
                    f"[cache] {gen_cls.name}/{k}: reusing bundle {dests[k]}",
                    file=sys.stderr,
                    flush=True,
                )
            elif first.setdefault(dests[k], k) == k:  # two keys, one setting: trained once
                todo[k] = TrainJob(tr, va, c, dests[k], dk)
        if todo:
            gen_cls.train_many(todo, cache, run, use_cache)
    return dests


def real_by_class(ds: ImageSet) -> dict[str, np.ndarray]:
    return {c: ds.images[ds.labels == i] for i, c in enumerate(ds.class_names)}


def rgb_masks(m: np.ndarray) -> np.ndarray:
    return np.repeat((m.astype(np.uint8) * 255)[..., None], 3, axis=-1)


def fidelity(
    sampler: Generator,
    ds: ImageSet,
    split: str,
    n: int,
    seed: int,
    feature_cache: Path,
    split_hash: str,
    gen_cfg=None,
    train: ImageSet | None = None,
    figures: Path | None = None,
) -> dict[str, float]:
    """FID/KID per class and overall: synthetic samples vs the real images of `split` (features of
    the real side cached once per split and class). With `gen_cfg` (the generator's config), the mask
    generator too: sampled masks vs the real masks the generator names (`Generator.mask_reference`),
    as "fid_<split>_mask_inception/...".
    With `train` (the generator's real training images), on the same features: precision, recall,
    density, coverage and the memorisation share (`metrics.realism`), and with `figures` (a folder)
    each class's closest synthetic/training pairs as `memorisation_<class>.png`."""
    from ..metrics.fidelity import cached_features, inception_features, per_class

    samples = {c: sampler.sample(n, c, seed=seed) for c in ds.class_names}
    feats = {
        c: cached_features(x, f"{split_hash}:{split}:{c}", feature_cache)
        for c, x in real_by_class(ds).items()
    }
    fake = {
        c: inception_features(s[0]) for c, s in samples.items()
    }  # once: FID/KID and realism read them
    out = per_class(
        {},
        {c: s[0] for c, s in samples.items()},
        split=split,
        real_features=feats,
        fake_features=fake,
    )
    if train is not None:
        out.update(
            realism(samples, fake, feats, train, split, split_hash, feature_cache, seed, figures)
        )
    with_masks = gen_cfg is not None and all(s[1] is not None for s in samples.values())
    ref = type(sampler).mask_reference(gen_cfg, ds) if with_masks else None
    if ref is not None:
        m, mk = ref  # mk: a segmenter's content hash included: two segmenters never share features
        real_m = {c: rgb_masks(m[ds.labels == i]) for i, c in enumerate(ds.class_names)}
        mf = {
            c: cached_features(x, f"{split_hash}:{split}:{c}:masks:{mk}", feature_cache)
            for c, x in real_m.items()
        }
        out.update(
            per_class(
                {},
                {c: rgb_masks(s[1]) for c, s in samples.items()},
                split=f"{split}_mask",
                real_features=mf,
            )
        )
    return {k: float(v) for k, v in out.items()}


def realism(
    samples: dict,
    fake: dict,
    real: dict,
    train: ImageSet,
    split: str,
    split_hash: str,
    feature_cache: Path,
    seed: int,
    figures: Path | None,
) -> dict[str, float]:
    """`fidelity`'s realism and memorisation figures (train features cached once per split and class)."""
    from ..metrics import realism as R
    from ..metrics.fidelity import cached_features

    tr = real_by_class(train)
    tf = {
        c: cached_features(x, f"{split_hash}:train:{c}", feature_cache)
        for c, x in tr.items()
        if len(x) >= 2
    }
    out, pairs = R.per_class(real, fake, split, tf, seed=seed)
    if figures is not None:
        from ..io import save_png
        from ..report.grids import labelled_grid, safe_name

        for c, pp in pairs.items():
            rows = {
                "synthetic": samples[c][0][[i for i, _, _ in pp]],
                "nearest train": tr[c][[j for _, j, _ in pp]],
            }
            title = (
                f"{c}: closest synthetic/training pairs, Inception distance "
                f"{', '.join(f'{d:.1f}' for _, _, d in pp)} (memorised below "
                f"{out[names.realism('memorised_threshold', split, c)]:.1f})"
            )
            save_png(
                Path(figures) / f"memorisation_{safe_name(c)}.png",
                labelled_grid(rows, title, k=len(pp)),
            )
    return out


def memorisation_flag(metrics: dict, split: str, threshold: float, who: str) -> dict[str, str]:
    """The `memorised` tag of a generator's run ({} without memorisation figures), and a console
    warning when any class's memorised share passes `threshold` (a study's `memorised_max`)."""
    from ..metrics.realism import flagged

    over = flagged(metrics, split, threshold)
    if not any(k.startswith(names.realism("memorised_share", split, "")) for k in metrics):
        return {}
    if over:
        what = ", ".join(f"{c} {v:.0%}" for c, v in sorted(over.items()))
        print(
            f"[study] WARNING: {who} memorises its training images: "
            f"memorised share {what} > memorised_max {threshold:.0%} "
            "(held-out real images: ~5-8%); see memorisation_<class>.png",
            file=sys.stderr,
            flush=True,
        )
        return {"memorised": f"flagged: {what} > {threshold:g}"}
    return {"memorised": f"no (every class <= {threshold:g})"}


def epoch_report_callback(extra: dict):
    """A Train→Tune callback whose every per-epoch report also carries `extra` (the trial's FID/KID).

    ASHA may stop a trial after any epoch; its last report is what the searcher is told.
    A multi-objective search (FID and the validation metric) needs both in that report.
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..training.loop import ERROR_KEY

    class _WithExtra(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if (
                ERROR_KEY in metrics[0]
            ):  # the job ends with a TrainingError: the trial fails on it, ASHA sees no epoch
                return
            super().after_report(run_context, [{**extra, **metrics[0]}, *metrics[1:]], checkpoint)

    return _WithExtra()


def filtered_sampler(sampler, cfg, train: ImageSet, split_hash: str, cache: Path, seed: int):
    """`sampler` behind the synthetic-sample filter `cfg` (classify/filter.py), ranked against the
    split's real TRAINING features (cached under the key `realism` uses)."""
    from ..classify.filter import FilteredSampler
    from ..metrics.fidelity import cached_features

    real = {
        c: cached_features(x, f"{split_hash}:train:{c}", cache / "features")
        for c, x in real_by_class(train).items()
    }
    return FilteredSampler(sampler, cfg, real, seed=seed)


def write_filter_grids(d: Path, kept, title: str, k: int = 8) -> None:
    """(trial) `filter_<class>.png`: the best and worst kept synthetic images of each class (and the
    best rejected ones), score order; the MLflow callback logs them to the trial's child run."""
    from ..io import save_png
    from ..report.grids import labelled_grid, safe_name

    for c, rows in kept.best_and_worst(k).items():
        r = kept.records[c]
        save_png(
            d / f"filter_{safe_name(c)}.png",
            labelled_grid(rows, f"{c}: {title}: kept {r.kept} of {len(r.ranked)}", k=k),
        )


def register_best(
    models: list[tuple[str, Path, str]],
    *,
    score: float,
    protocol: str,
    metric: str,
    higher_is_better: bool,
    recorded: dict,
    smoke: bool,
    budget: int,
    min_epochs: int,
) -> dict:
    """Register a study's chosen models ([(registry name, bundle, kind)]) with the validation
    figure that chose them. The champion alias moves only within `protocol`, on `score`; the test
    figures (`recorded`) ride along as tags, never compared. A smoke run, or a run whose stages
    trained fewer than `min_epochs` epochs (`budget`), is registered but never takes the champion."""
    from ..tracking.registry import register

    ineligible = (
        "a --smoke-test run"
        if smoke
        else f"below the budget for a champion ({budget} < champion_min_epochs={min_epochs} epochs)"
        if budget < min_epochs
        else None
    )
    out = {}
    for name, path, kind in models:
        version, promoted = register(
            name,
            path,
            score=score,
            protocol=protocol,
            metric=metric,
            higher_is_better=higher_is_better,
            kind=kind,
            recorded=recorded,
            ineligible=ineligible,
            tags={"cytoray.smoke": str(smoke).lower()},
        )
        out[name] = {"version": version, "champion": promoted, "ineligible": ineligible}
        why = (
            f" (not eligible for champion: {ineligible})"
            if ineligible
            else (" is the new champion" if promoted else " (champion kept)")
        )
        print(f"[registry] {name} v{version}{why}", file=sys.stderr)
    return out
