"""Classifier bundles: classifier.json + model.pt, loadable anywhere (registry pulls included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CytorayError
from ..io import atomic_path, write_json

META = "classifier.json"


def write_classifier_bundle(
    out: str | Path, state: dict, *, name: str, class_names, input_size: int, params: dict
) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save(state, tmp)
    write_json(
        out / META,
        {
            "classifier": name,
            "class_names": list(class_names),
            "input_size": input_size,
            "params": params,
        },
    )
    return out


def load_classifier_bundle(path: str | Path):
    from ..nets.classifiers import build_classifier

    path = Path(path)
    if not (path / META).is_file():
        raise CytorayError(f"{path}: not a cytoray classifier bundle (no {META})")
    from ..bundle import build_net, load_weights, read_meta

    meta = read_meta(
        path / META, ("classifier", "class_names", "input_size"), "classifier bundle file"
    )
    names, size = meta["class_names"], meta["input_size"]
    if not (
        isinstance(names, list) and len(names) >= 2 and isinstance(size, int) and 16 <= size <= 4096
    ):
        raise CytorayError(
            f"{path / META}: class_names {names!r} / input_size "
            f"{size!r} are not a trained classifier's; retrain"
        )
    params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
    kwargs = {
        "num_classes": len(names),
        "image_size": size,
        "transform_input": params.get("transform_input") is True,
    }
    # transform_input: as trained
    model = build_net(lambda **kw: build_classifier(meta["classifier"], **kw), kwargs, path / META)
    try:  # weights_only=True (in load_weights): a registered model's file holds tensors, never code
        model.load_state_dict(load_weights(path / "model.pt"))
    except RuntimeError as e:
        raise CytorayError(
            f"{path / 'model.pt'}: does not fit {meta['classifier']} "
            f"({str(e).splitlines()[0][:120]}); retrain"
        ) from None
    return model.eval(), meta


def predict_images(model, meta: dict, images: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,3] → class probabilities [N, C] (same preprocessing as training)."""
    from .train import predict_proba, to_input

    x = to_input(images, meta["input_size"], torch.device("cpu"))
    return predict_proba(model, x, 64)
