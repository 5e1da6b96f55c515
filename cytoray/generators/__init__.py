"""Generators: one module per generator, each a `Generator` subclass with its own typed Config.

Adding a generator is one module (a subclass of `base.Generator`; subclassing registers it),
one YAML in configs/models/ and its test. Start from `_template.py` (the smallest complete
generator, commented, to copy); `base.py` has the interface and `vanilla.py` is the smallest real one.
"""

from __future__ import annotations

from .base import (
    BUNDLE_META,
    GENERATORS,
    Generator,
    GeneratorConfig,
    discover,
    generator_names,
    get_generator,
    load_bundle,
    register_classes,
)

__all__ = [
    "BUNDLE_META",
    "GENERATORS",
    "Generator",
    "GeneratorConfig",
    "discover",
    "generator_names",
    "get_generator",
    "load_bundle",
    "register_classes",
]
