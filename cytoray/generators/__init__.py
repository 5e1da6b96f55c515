"""Generators: one module per generator, each a `Generator` subclass with its own typed Config.

Adding a generator is one module (a subclass of `base.Generator`; subclassing registers it),
one YAML in configs/models/ and its test. See `base.py` for the interface and `vanilla.py` for
the smallest real example.
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
