"""Generators: one module per generator, registered by name.

Adding a generator is one file plus `@register("name")` on a class with
`train(split, cfg, out, cache_root, data_key) -> Path` (writes a bundle folder) and
`load(bundle) -> sampler` whose `sample(n, cls, seed)` returns uint8 images (and masks, if any).
See `syncgan.py` for the pattern.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..errors import CytorayError

GENERATORS: dict[str, type] = {}
BUNDLE_META = "generator.json"


def registrar(table: dict[str, type]) -> Callable[[str], Callable]:
    """A `@register("name")` decorator for `table`: sets `cls.name` and records the class."""

    def register(name: str) -> Callable:
        def deco(cls):
            cls.name = name
            table[name] = cls
            return cls

        return deco

    return register


register = registrar(GENERATORS)


def _import_builtin() -> None:
    from . import syncgan, vanilla  # noqa: F401  (registration side effect)
    from . import cyclegan, nst  # noqa: F401  (histology → cytology translators)


def get_generator(name: str) -> type:
    _import_builtin()
    if name not in GENERATORS:
        raise CytorayError(f"unknown generator '{name}' (valid: {', '.join(sorted(GENERATORS))})")
    return GENERATORS[name]


def load_bundle(path: str | Path):
    """Load a trained generator bundle (a folder with generator.json) as a sampler."""
    path = Path(path)
    meta_path = path / BUNDLE_META
    if not meta_path.is_file():
        raise CytorayError(f"{path}: not a cytoray generator checkpoint (no {BUNDLE_META}); pass the --out folder of `cytoray train`")
    meta = json.loads(meta_path.read_text())
    return get_generator(meta["generator"]).load(path)
