"""`cytoray turing build`: a blinded reading set of n images, half real, half synthetic.

The real half comes from the TEST split of the same seeded split the generator was trained on
(checked against the bundle's `data_key`, the manifest hash), so a reader is never shown an image
the generator learnt from. Classes are balanced in both halves, the order is shuffled with the
seed, and the file names are random hex (from `secrets`, not from the seed: a reader who knows the
seed cannot rebuild the names). The real images are resized to the generator's size exactly as
training saw them, so size gives nothing away; every image is re-encoded by the same PNG writer,
in the shuffled order (file times say nothing either).
"""

from __future__ import annotations

import datetime
import secrets
import tempfile
from pathlib import Path

import numpy as np

from ..errors import CytorayError, DataError
from ..io import atomic_dir, save_png, write_json
from . import IMAGES, SET_FILE, key_path


def _registered_run(ref: str) -> tuple[str, str | None]:
    """(NAME/VERSION, the MLflow run that logged it) of a registry ref."""
    import mlflow

    from ..tracking.registry import resolve_version

    fixed = resolve_version(ref)
    name, _, version = fixed.partition("/")
    try:
        return fixed, mlflow.MlflowClient().get_model_version(name, version).run_id
    except Exception:  # noqa: BLE001 — the pull already succeeded; the run id is a courtesy
        return fixed, None


def load_generator(ref: str, tmp: Path, tracking_uri: str | None = None):
    """(sampler, bundle meta, {"ref", "version", "run_id"}) of a local bundle folder or a NAME@ALIAS ref."""
    import json

    from ..bundle import BUNDLE_META
    from ..generators import load_bundle

    local = Path(ref).expanduser()
    if local.is_dir():
        bundle, info = local, {"ref": str(local.resolve()), "version": None, "run_id": None}
    elif local.exists() or "/" in ref and not ref.rsplit("/", 1)[-1].isdigit():
        raise CytorayError(
            f"--generator {ref}: not a generator bundle folder; give the --out "
            "folder of `cytoray train` or a registered NAME@ALIAS (NAME/VERSION)"
        )
    else:
        import mlflow

        from ..tracking.mlflow_utils import store_uri
        from ..tracking.mlflow_utils import tracking_uri as default_uri
        from ..tracking.registry import pull

        mlflow.set_tracking_uri(store_uri(default_uri(tracking_uri)))
        bundle = pull(ref, tmp)
        version, run_id = _registered_run(ref)
        info = {"ref": ref, "version": version, "run_id": run_id}
    gen = load_bundle(bundle)
    return gen, json.loads((bundle / BUNDLE_META).read_text()), info


def real_test_split(
    data: str, size: int, split_seed: int, data_key: str | None, check: bool = True
):
    """The test images of `data` under the split a study (or `cytoray train`) with this seed makes."""
    from ..config import DataConfig, from_dict
    from ..data.source import load_dataset
    from ..data.splits import make_manifest

    cfg = from_dict(
        DataConfig, {"root": data, "size": size, "split_seed": split_seed}, "turing build"
    )
    ds = load_dataset(cfg, progress=True)
    man, _ = make_manifest(ds, cfg.split_ratios, cfg.split_seed, cfg.near_duplicate_bits)
    if check and data_key is not None and data_key != man.hash:
        raise DataError(
            f"{data}: its split with seed {split_seed} at {size} px (hash {man.hash}) is "
            f"not the one the generator was trained on ({data_key}), so its test images may "
            "be the generator's training images; pass the --data and --split-seed it was "
            "trained with (or --unchecked-split to take this split's test images anyway)"
        )
    return ds.subset(man.indices("test")), man


def plan(classes: list[str], n: int, available: dict[str, int]) -> int:
    """Images per class and source: n = 2 sources x classes x k; refuse what cannot be balanced."""
    per = 2 * len(classes)
    if n < per or n % per:
        raise CytorayError(
            f"--n {n}: give a multiple of {per} (2 sources x "
            f"{len(classes)} classes) so both halves are balanced"
        )
    k = n // per
    short = {c: m for c, m in available.items() if m < k}
    if short:
        have = ", ".join(f"'{c}' {m}" for c, m in short.items())
        raise DataError(
            f"the test split has too few real images for {k} per class "
            f"({have}); lower --n to at most {per * min(available.values())}"
        )
    return k


def build(
    ref: str,
    data: str,
    n: int,
    out: str | Path,
    seed: int = 0,
    split_seed: int = 0,
    tracking_uri: str | None = None,
    run_id: str | None = None,
    unchecked_split: bool = False,
) -> tuple[Path, Path]:
    """Write the reading set `out/` and its key `out.key.json`; returns both paths."""
    out = Path(out).resolve()
    key_file = key_path(out)
    if key_file.exists() or (out.exists() and any(out.iterdir())):
        raise CytorayError(
            f"{out}: a reading set (or its key {key_file.name}) is already there; "
            "choose another --out (readers' answers belong to the set they read)"
        )
    with tempfile.TemporaryDirectory(
        prefix="cytoray-turing-"
    ) as tmp:  # a pulled bundle is not kept
        gen, meta, info = load_generator(ref, Path(tmp), tracking_uri)
        probe, _ = gen.sample(1, gen.classes[0], seed=seed)
        size = int(probe.shape[1])
        test, man = real_test_split(
            data, size, split_seed, meta.get("data_key"), check=not unchecked_split
        )
        missing = [c for c in gen.classes if c not in test.class_names]
        if missing:
            raise DataError(
                f"{data}: no class folder for the generator's class(es) {', '.join(missing)} "
                f"(data classes: {', '.join(test.class_names)})"
            )
        classes = list(gen.classes)
        k = plan(
            classes, n, {c: int(np.sum(test.labels == test.class_names.index(c))) for c in classes}
        )
        rng = np.random.default_rng(seed)
        items: list[tuple[np.ndarray, dict]] = []
        for c in classes:
            idx = np.nonzero(test.labels == test.class_names.index(c))[0]
            for i in rng.choice(idx, size=k, replace=False):
                items.append(
                    (
                        test.images[i],
                        {
                            "source": "real",
                            "class": c,
                            "origin": test.names[i],
                            "sha256": test.sha256[i],
                        },
                    )
                )
            synth, _ = gen.sample(k, c, seed=seed)
            items += [
                (im, {"source": "synthetic", "class": c, "origin": f"sample seed={seed} #{j}"})
                for j, im in enumerate(synth)
            ]
    order = rng.permutation(len(items))
    ids = _opaque_ids(len(items))
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with atomic_dir(out) as d:
        for pos in order:  # written in reading order
            save_png(d / IMAGES / f"{ids[pos]}.png", items[pos][0])
        write_json(
            d / SET_FILE,
            {
                "version": 1,
                "n": len(items),
                "classes": classes,
                "size": size,
                "images": [ids[pos] for pos in order],
                "created": created,
            },
        )
    write_json(
        key_file,
        {
            "version": 1,
            "reading_set": str(out),
            "created": created,
            "generator": info["ref"],
            "generator_version": info["version"],
            "generator_kind": meta.get("generator"),
            "run_id": run_id or info["run_id"],
            "data": str(Path(data).resolve()),
            "split_hash": man.hash,
            "split_seed": split_seed,
            "split_checked": not unchecked_split,
            "seed": seed,
            "size": size,
            "per_class_and_source": k,
            "images": {ids[pos]: items[pos][1] for pos in order},
        },
    )
    return out, key_file


def _opaque_ids(n: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < n:
        ids.add(secrets.token_hex(8))
    return list(ids)


def build_from_args(a) -> int:
    out, key = build(
        a.generator,
        a.data,
        a.n,
        a.out,
        seed=a.seed,
        split_seed=a.split_seed,
        tracking_uri=a.tracking_uri,
        run_id=a.run_id,
        unchecked_split=a.unchecked_split,
    )
    print(
        f"wrote a reading set of {a.n} images to {out} (serve "
        f"it: cytoray turing serve {out} --reader NAME)"
    )
    print(f"key (keep it from the readers): {key}")
    return 0
