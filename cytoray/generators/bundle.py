"""Generator bundles on disk: one state dict per network, small data files, sample grids, generator.json.

Each file is written atomically and generator.json last, so a folder with generator.json is a
complete bundle. Weights load with `weights_only=True`: a bundle holds tensors, never code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..io import atomic_path, write_bytes, write_json

BUNDLE_META = "generator.json"  # written last: a folder holding it is a complete bundle


def write_bundle(out: str | Path, meta: dict, states: dict[str, dict], files: dict[str, bytes] | None = None,
                 extra_dirs: dict[str, list[Path]] | None = None) -> Path:  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, sd in states.items():
        with atomic_path(out / f"{name}.pt") as tmp:
            torch.save(sd, tmp)
    for name, data in (files or {}).items():
        write_bytes(out / name, data)
    for sub, paths in (extra_dirs or {}).items():
        (out / sub).mkdir(parents=True, exist_ok=True)
        for f in paths:
            with atomic_path(out / sub / f.name) as tmp:
                shutil.copy2(f, tmp)
    write_json(out / BUNDLE_META, meta)  # last: marks the bundle complete
    return out


def read_bundle(path: str | Path) -> tuple[dict, Path]:
    path = Path(path)
    return json.loads((path / BUNDLE_META).read_text()), path


def load_state(path: Path, name: str) -> dict:
    return torch.load(path / f"{name}.pt", map_location="cpu", weights_only=True)


def load_per_class(path: Path, specs: dict[str, dict], factory, prefix: str) -> dict:
    """One network per class: `factory(**specs[c]["kwargs"])` loaded from `<prefix><c>.pt`."""
    nets = {}
    for c, spec in specs.items():
        net = factory(**spec["kwargs"])
        net.load_state_dict(load_state(path, f"{prefix}{c}"))
        nets[c] = net
    return nets


def npz_bytes(**arrays) -> bytes:
    """Arrays as compressed .npz bytes (written atomically by `write_bundle`)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
