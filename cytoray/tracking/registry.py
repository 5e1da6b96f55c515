"""Model registry: register the best trial's generators/classifier, move `champion` only when
a new version beats it on the VALIDATION metric under the same protocol, and pull a version in
a fresh process.

The champion is never chosen on a test split: the test figures are recorded on the version
(`cytoray.test.<metric>` tags), not compared. A version registered from a smoke run or below
the study's minimum budget is kept under the tag `cytoray.eligible=false` and never takes the
alias. A champion chosen on a test metric by an older cytoray is replaced by the next
eligible version.

A registered model is an MLflow pyfunc whose artefact is a cytoray bundle folder (generator
bundle, classifier folder or segmenter bundle), so `cytoray pull NAME@ALIAS` needs only the
tracking URI. The pyfunc is logged as code (`cytoray/model_code/`), never as a pickled object: loading a registered
model runs a file of cytoray, not bytes someone wrote to the store.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc

from ..errors import CytorayError

CHAMPION = "champion"


MODEL_CODE = {
    kind: Path(__file__).parents[1] / "model_code" / f"{kind}.py"
    for kind in ("generator", "classifier", "segmenter")
}


def _requirements() -> list[str]:
    import torch
    import torchvision

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"torchvision=={torchvision.__version__.split('+')[0]}",
        "cytoray",
    ]


def register(
    name: str,
    bundle_dir: str | Path,
    *,
    score: float,
    protocol: str,
    metric: str,
    higher_is_better: bool = True,
    tags: dict | None = None,
    kind: str = "generator",
    recorded: dict | None = None,
    ineligible: str | None = None,
) -> tuple[str, bool]:
    """Log `bundle_dir` as a pyfunc model and register it as a new version of `name`.

    `kind` is "generator", "classifier" or "segmenter" (the pyfunc code logged with it).
    `metric`/`score` is the selection figure (validation); `recorded` figures (the test split)
    are tagged on the version and never compared. The `champion` alias moves to it when it is
    eligible (`ineligible` says why not, e.g. a smoke run) and there is no champion yet, or it
    beats the champion on `metric` under the same `protocol`; a champion measured under another
    protocol is never displaced (the figures are not comparable). Returns (version, promoted).
    """
    if metric.startswith("test_"):
        raise ValueError(
            f"metric {metric!r}: a champion is chosen on validation, never on the test split"
        )
    from mlflow import MlflowClient

    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        staged = _stage_bundle(Path(bundle_dir), Path(tmp) / "bundle")
        with (
            warnings.catch_warnings()
        ):  # the signature is stated; an example would only re-run predict at logging
            warnings.filterwarnings(
                "ignore", message=".*An input example was not provided", category=UserWarning
            )
            info = _log_model(name, kind, staged)
    mv = _new_version(client, name, info)
    version_tags = {
        "cytoray.protocol": protocol,
        "cytoray.metric": metric,
        "cytoray.score": repr(float(score)),
        "cytoray.eligible": "false" if ineligible else "true",
        **(tags or {}),
    }
    if ineligible:
        version_tags["cytoray.ineligible_reason"] = ineligible
    version_tags.update({f"cytoray.test.{k}": repr(float(v)) for k, v in (recorded or {}).items()})
    for k, v in version_tags.items():
        client.set_model_version_tag(name, mv.version, k, str(v))
    promoted = (
        False
        if ineligible
        else _maybe_promote(client, name, mv.version, score, protocol, metric, higher_is_better)
    )
    return str(mv.version), promoted


def _log_model(name: str, kind: str, staged: Path):
    # linked to the active run, if any
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE[kind]),  # models-from-code: nothing pickled
        artifacts={"bundle": str(staged)},
        pip_requirements=_requirements(),
        # stated, so MLflow neither guesses one nor warns that it cannot
        signature=_signature(kind),
    )


def _signature(kind: str):
    """What `predict` takes: a generator rows of (n, cls[, seed]); a classifier uint8 RGB images
    [N, H, W, 3], returning class probabilities [N, C]; a segmenter uint8 RGB images [N, H, W, 3],
    returning uint8 0/1 masks [N, H, W] (params output=probability: float32 probabilities)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    images = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))])
    if kind == "generator":
        return ModelSignature(
            inputs=Schema(
                [
                    ColSpec("long", "n"),
                    ColSpec("string", "cls"),
                    ColSpec("long", "seed", required=False),
                ]
            )
        )
    if kind == "segmenter":
        return ModelSignature(
            inputs=images,
            outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
            params=ParamSchema([ParamSpec("output", "string", "mask")]),
        )
    return ModelSignature(
        inputs=images, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))])
    )


def _new_version(client, name: str, info):
    """`mlflow.register_model` without its console lines ("Successfully registered model ...",
    "Created version ..."): the caller prints one `[registry]` line of its own."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.create_model_version(
        name, info.model_uri, run_id=info.run_id, model_id=info.model_id
    )


def _stage_bundle(src: Path, dst: Path) -> Path:
    """Copy only the bundle's own files (meta, weights, grids, small data), never a stage cache."""
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix in (".json", ".pt", ".npz"):
            shutil.copy2(f, dst / f.name)
    if (src / "grids").is_dir():
        shutil.copytree(src / "grids", dst / "grids")
    return dst


def _maybe_promote(client, name, version, score, protocol, metric, higher_is_better) -> bool:
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:
        champ = None
    if champ is not None and not champ.tags.get("cytoray.metric", "test_").startswith(
        "test_"
    ):  # chosen on test: replace
        t = champ.tags
        if t.get("cytoray.protocol") != protocol or t.get("cytoray.metric") != metric:
            return False  # not comparable: keep the champion (a reviewer compares like with like)
        old = float(t["cytoray.score"])
        if not (score > old if higher_is_better else score < old):
            return False
    client.set_registered_model_alias(name, CHAMPION, version)
    return True


REF = re.compile(r"([^@/\s]+)(?:@([^@/\s]+)|/(\d+))")  # NAME@ALIAS or NAME/VERSION


def resolve_version(ref: str) -> str:
    """NAME/VERSION that NAME@ALIAS points to now (a version never changes, an alias moves); any
    other ref, or one the registry cannot resolve, is returned as given for `pull` to explain."""
    from .mlflow_utils import check_store

    m = REF.fullmatch(ref)
    if m is None or m.group(2) is None:
        return ref
    check_store(mlflow.get_tracking_uri())
    try:
        return f"{m.group(1)}/{mlflow.MlflowClient().get_model_version_by_alias(m.group(1), m.group(2)).version}"
    except Exception:  # noqa: BLE001 — pull names the problem (not found, unreachable) in its own words
        return ref


def pull(ref: str, dst: str | Path) -> Path:
    """Download `NAME@ALIAS` (or `NAME/VERSION`) into `dst` and return its bundle folder there."""
    from .mlflow_utils import check_store, failure_kind, tracking_error

    if not REF.fullmatch(ref):
        raise CytorayError(
            f"'{ref}': give a registered model as NAME@ALIAS "
            "(e.g. syncgan@champion) or NAME/VERSION"
        )
    uri = mlflow.get_tracking_uri()
    check_store(uri)
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{ref}", dst_path=str(dst))
        )
    except Exception as e:
        err = tracking_error(e, uri, f"pulling {ref}")
        if err is not None:
            raise err from None
        kind = failure_kind(e) or "not found"
        raise CytorayError(
            f"{ref}: {kind} in the registry at {uri} ({str(e).splitlines()[0][:200]}); "
            "check the name/alias and --tracking-uri"
        ) from None
    bundle = local / "artifacts" / "bundle"
    if not bundle.is_dir():
        raise CytorayError(f"{ref}: the registered model has no cytoray bundle (artifacts/bundle)")
    return bundle
