"""Bundles on disk (generators, segmenters, classifiers): one state dict per network, small data files,
sample grids, and a meta JSON (generator.json for a generator).

Each file is written atomically and generator.json last, so a folder with generator.json is a
complete bundle. Weights load with `weights_only=True`: a bundle holds tensors, never code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .io import atomic_path, write_bytes, write_json

BUNDLE_META = "generator.json"  # written last: a folder holding it is a complete bundle


def write_bundle(
    out: str | Path,
    meta: dict,
    states: dict[str, dict],
    files: dict[str, bytes] | None = None,
    extra_dirs: dict[str, list[Path]] | None = None,
) -> Path:
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


def read_meta(file: Path, required: tuple[str, ...], what: str) -> dict:
    """A bundle's JSON file as a mapping holding `required` keys, or a one-line error naming it
    (not JSON, `{}`, a list, a missing key: a damaged or foreign folder, never a traceback)."""
    from .errors import CytorayError

    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CytorayError(
            f"{file}: not a readable {what} "
            f"({str(e).splitlines()[0][:120]}); re-copy the bundle or retrain"
        ) from None
    if not isinstance(meta, dict):
        raise CytorayError(
            f"{file}: a {what} holds a JSON object, this holds "
            f"{type(meta).__name__}; re-copy the bundle or retrain"
        )
    return require(meta, required, file, what)


def require(meta: dict, required: tuple[str, ...], file: Path, what: str) -> dict:
    """`meta` if it holds every `required` key, else a one-line error naming `file`."""
    from .errors import CytorayError

    missing = [k for k in required if k not in meta]
    if missing:
        raise CytorayError(
            f"{file}: {what} lacks {', '.join(missing)}; re-copy the bundle or retrain"
        )
    return meta


def read_bundle(path: str | Path) -> tuple[dict, Path]:
    path = Path(path)
    return read_meta(path / BUNDLE_META, ("generator",), "generator bundle file"), path


def load_weights(file: Path) -> dict:
    """A state dict (tensors only: `weights_only=True`, never code), or a one-line error naming a
    truncated or foreign file."""
    from .errors import CytorayError

    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CytorayError(
            f"{file}: missing from the bundle; re-copy the bundle or retrain"
        ) from None
    except (
        Exception
    ) as e:  # truncated zip, a pickle with code (refused by weights_only), not torch at all
        raise CytorayError(
            f"{file}: not loadable weights ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "re-copy the bundle or retrain"
        ) from None


def load_arrays(file: Path):
    """An .npz of a bundle (no pickles: numpy's default), or a one-line error naming a missing,
    truncated or foreign file (zipfile.BadZipFile was a traceback)."""
    import numpy as np

    from .errors import CytorayError

    try:
        return np.load(file)
    except FileNotFoundError:
        raise CytorayError(
            f"{file}: missing from the bundle; re-copy the bundle or retrain"
        ) from None
    except Exception as e:  # truncated zip, not an npz, a pickled object array (allow_pickle=False)
        raise CytorayError(
            f"{file}: not loadable arrays ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
            "re-copy the bundle or retrain"
        ) from None


def load_state(path: Path, name: str) -> dict:
    return load_weights(path / f"{name}.pt")


def build_net(factory, kwargs: dict, where: Path):
    """`factory(**kwargs)` with kwargs from a bundle's JSON: unknown or absurd ones are named."""
    from .errors import CytorayError

    if not isinstance(kwargs, dict) or any(
        isinstance(v, int) and not -(1 << 16) <= v <= 1 << 16 for v in kwargs.values()
    ):
        raise CytorayError(
            f"{where}: network arguments {kwargs!r} are not a "
            "plausible network (a size above 65536?); retrain"
        )
    try:
        return factory(**kwargs)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CytorayError(
            f"{where}: network arguments {kwargs!r} do not "
            f"build ({str(e).splitlines()[0][:120]}); retrain"
        ) from None


def load_per_class(path: Path, specs: dict[str, dict], factory, prefix: str) -> dict:
    """One network per class: `factory(**specs[c]["kwargs"])` loaded from `<prefix><c>.pt`."""
    from .errors import CytorayError

    nets = {}
    for c, spec in specs.items():
        net = build_net(
            factory, spec.get("kwargs") if isinstance(spec, dict) else None, path / BUNDLE_META
        )
        try:
            net.load_state_dict(load_state(path, f"{prefix}{c}"))
        except RuntimeError as e:  # shapes that do not match the recorded arguments
            raise CytorayError(
                f"{path / f'{prefix}{c}.pt'}: does not fit its "
                f"network ({str(e).splitlines()[0][:120]}); retrain"
            ) from None
        nets[c] = net
    return nets


def npz_bytes(**arrays) -> bytes:
    """Arrays as compressed .npz bytes (written atomically by `write_bundle`)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
