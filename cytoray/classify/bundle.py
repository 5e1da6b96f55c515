"""Classifier bundles: classifier.json + model.pt, loadable anywhere (registry pulls included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import CytorayError
from ..io import atomic_path, write_json

META = "classifier.json"


def write_classifier_bundle(out: str | Path, state: dict, *, name: str, class_names, input_size: int, params: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save(state, tmp)
    write_json(out / META, {"classifier": name, "class_names": list(class_names), "input_size": input_size, "params": params})
    return out


def load_classifier_bundle(path: str | Path):
    from ..nets.classifiers import build_classifier

    path = Path(path)
    if not (path / META).is_file():
        raise CytorayError(f"{path}: not a cytoray classifier bundle (no {META})")
    meta = json.loads((path / META).read_text())
    model = build_classifier(meta["classifier"], len(meta["class_names"]), meta["input_size"])
    model.load_state_dict(torch.load(path / "model.pt", map_location="cpu"))
    return model.eval(), meta


def predict_images(model, meta: dict, images: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,3] → class probabilities [N, C] (same preprocessing as training)."""
    from .train import predict_proba, to_input

    x = to_input(images, meta["input_size"], torch.device("cpu"))
    return predict_proba(model, x, 64)
