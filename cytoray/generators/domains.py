"""Two image domains for translation generators: a source (histology) and a target (cytology).

A generator that `consumes = "domains"` trains on `DomainPair`s: unpaired source and target
images of the same classes, each domain split by its own seeded manifest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..data.folder import ImageSet
from ..errors import ConfigError, DataError

# Per class and domain: a 3:1:1 split leaves >= 2 test images for FID/KID; fewer is refused.
MIN_PER_CLASS = 10


def source_domain() -> DataConfig:
    """A translator's default source domain: the embedded simulator's histology, seeded apart from
    the cytology domain (seed 0) so the two domains never share a draw."""
    return DataConfig(sim_kind="histology", sim_seed=1)


def source_field():
    """The `source:` section of a study or `cytoray train` config (a translator's histology)."""
    return dataclasses.field(default_factory=source_domain)


def check_min_per_class(n: int) -> None:
    """`min_per_class` as a config gives it: a train/val/test split needs at least 5 per class."""
    if n < 5:
        raise ConfigError(f"min_per_class={n}: a train/val/test split needs >= 5 per class")


@dataclasses.dataclass
class DomainPair:
    """Unpaired source (histology) and target (cytology) images of one split."""

    source: ImageSet
    target: ImageSet


def check_domains(source: ImageSet, target: ImageSet, min_per_class: int) -> None:
    """Refuse unusable domain pairs before any training, naming the folder at fault."""
    for ds, what in ((source, "histology"), (target, "cytology")):
        if len(ds) == 0:
            raise DataError(f"{ds.source}: the {what} domain has no images")
    if tuple(source.class_names) != tuple(target.class_names):
        raise DataError(
            f"{source.source} has classes {list(source.class_names)} but "
            f"{target.source} has {list(target.class_names)}: a class-aware "
            "translator needs the same class folders in both domains"
        )
    for ds, what in ((source, "histology"), (target, "cytology")):
        for cls, n in ds.counts().items():
            if n < min_per_class:
                raise DataError(
                    f"{ds.source}: {what} class '{cls}' has {n} images, too few to train "
                    f"and evaluate (needs >= {min_per_class}); add images to '{cls}'"
                )


def domain_splits(
    target: DataConfig, source: DataConfig, min_per_class: int, out: Path
) -> tuple[dict[str, DomainPair], str, list[Path]]:
    """Both domains loaded and checked (before any training), each split by its own settings;
    the manifests are kept in `out` (histology_split.json, cytology_split.json) and reused while
    they match the data. Returns the train/val/test pairs, a key naming both splits, and the
    manifest paths."""
    from ..data.source import load_dataset, load_split

    check_min_per_class(min_per_class)  # before anything is read
    hist, cyto = load_dataset(source, progress=True), load_dataset(target, progress=True)
    check_domains(hist, cyto, min_per_class)
    parts, keys, paths = {}, [], []
    for name, ds, dc in (("histology", hist, source), ("cytology", cyto, target)):
        path = Path(out) / f"{name}_split.json"
        ds, man = load_split(dc, path, ds)
        parts[name] = {s: ds.subset(man.indices(s)) for s in ("train", "val", "test")}
        keys.append(man.hash)
        paths.append(path)
    pairs = {
        s: DomainPair(parts["histology"][s], parts["cytology"][s]) for s in ("train", "val", "test")
    }
    return pairs, "-".join(keys), paths


def align_unpaired(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Both domains at one length max(|a|, |b|): each shuffled, the shorter topped up with seeded draws."""
    rng = np.random.default_rng(seed)
    n = max(len(a), len(b))

    def fill(x: np.ndarray) -> np.ndarray:
        idx = np.concatenate([rng.permutation(len(x)), rng.integers(0, len(x), n - len(x))])
        return x[idx]

    return fill(a), fill(b)
