"""The Generator base class: what every generator plugin is and does.

A generator is one class:

    @dataclasses.dataclass
    class ToyConfig(GeneratorConfig):
        name: str = "toy"          # the registered name (the YAML section's `name`)
        epochs: int = 3            # every key with a default and a one-line reason

    class Toy(Generator):
        name, Config = "toy", ToyConfig
        consumes = "images"        # or "domains": a source (histology) and a target (cytology)

        @classmethod
        def stages(cls, train, val, cfg, data_key, seed): ...   # StageSpecs: what to train (maybe none)
        @classmethod
        def assemble(cls, train, cfg, results, data_key): ...   # → (meta, weights, files) of the bundle
        @classmethod
        def load(cls, path): ...                                # bundle folder → sampler
        def sample(self, n, cls, seed=0): ...                   # uint8 [n,S,S,3], masks or None

Subclassing registers it (no list to edit); `get_generator(name)` imports every module of this
package and the `cytoray.generators` entry points once, so a generator is found wherever it
lives. `train()` is shared: checks, one Ray Train job for the stages the stage cache lacks, the
bundle. A trained bundle's cache key is the hash of the generator's whole config, its data and
its seed: two configs that differ in any key never share a bundle.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import pkgutil
import sys
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from ..bundle import BUNDLE_META, write_bundle
from ..config import Section, to_plain
from ..errors import ConfigError, CytorayError
from ..io import stable_hash

GENERATORS: dict[str, type[Generator]] = {}
ENTRY_POINTS = "cytoray.generators"
_discovered = False


def discovered_module(module: str) -> bool:
    """Does `discover()` import this module: one of this package's, not named "_..." (_template.py)."""
    package, _, leaf = module.rpartition(".")
    return package == __package__ and not leaf.startswith("_")


def discover() -> None:
    """Import every generator module of this package and every installed plugin, once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    pkg = importlib.import_module(__package__)
    for m in pkgutil.iter_modules(pkg.__path__):
        if discovered_module(f"{__package__}.{m.name}"):
            importlib.import_module(f"{__package__}.{m.name}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
        ep.load()


def get_generator(name: str) -> type[Generator]:
    discover()
    if name not in GENERATORS:
        raise CytorayError(f"unknown generator '{name}' (valid: {', '.join(sorted(GENERATORS))})")
    return GENERATORS[name]


def generator_names() -> list[str]:
    discover()
    return sorted(GENERATORS)


def register_classes(classes: dict[str, type[Generator]]) -> None:
    """Make generator classes known in this process (a Ray worker receives a study's plugins by value)."""
    for name, cls in classes.items():
        GENERATORS.setdefault(name, cls)


@dataclasses.dataclass
class GeneratorConfig(Section):
    """Base of every generator's typed config; `name` picks the generator (and so the dataclass)."""

    name: str = ""

    @classmethod
    def section_class(cls, name: str, where: str) -> type:
        try:
            return get_generator(name).Config
        except CytorayError as e:
            raise ConfigError(f"{where}.name: {e}") from None

    @classmethod
    def section_names(cls) -> list[str]:
        return generator_names()


@dataclasses.dataclass
class TrainJob:
    """One training of a generator: its data (ImageSets, or DomainPairs for a generator that
    consumes two domains), its settings, the bundle folder to write and the data's cache key."""

    train: object
    val: object
    cfg: GeneratorConfig
    out: Path
    data_key: str


class Generator:
    name: ClassVar[str] = ""
    Config: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    consumes: ClassVar[Literal["images", "domains"]] = "images"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name:  # an abstract intermediate
            return
        if cls.Config().name != cls.name:
            raise TypeError(
                f"{cls.__qualname__}: Config().name is {cls.Config().name!r}, expected {cls.name!r}"
            )
        old = GENERATORS.get(cls.name)
        if old is not None and (old.__module__, old.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise TypeError(
                f"generator name {cls.name!r} is taken by {old.__module__}.{old.__qualname__}"
            )
        GENERATORS[cls.name] = cls

    # -- what studies need to know (so that no generic code names a generator) ------------------
    @classmethod
    def study_name(cls, study: str) -> str:
        """A study's default MLflow / Tune experiment for this generator, e.g. `syncgan_ratio`."""
        return f"{cls.name}_{study}"

    @classmethod
    def default_search(cls, study: str) -> str | None:
        """The search space a study uses for this generator unless told otherwise: the project's
        `configs/search/<name>_<study>.yaml` when it ships one (relative to the repository root,
        as `tune.search_space` is), else None (no search). A plugin elsewhere overrides this."""
        rel = f"configs/search/{cls.name}_{study}.yaml"
        return rel if (Path(__file__).resolve().parents[2] / rel).is_file() else None

    @classmethod
    def mask_reference(cls, cfg: GeneratorConfig, ds) -> tuple[np.ndarray, str] | None:
        """The real nucleus masks of `ds` that this generator's sampled masks are scored against
        (FID of masks), and a key naming how they were made (a segmenter's content hash included):
        those of its `masks:` section when it has one (SynCGAN, diffusion), else None."""
        masks = getattr(cfg, "masks", None)
        if masks is None:
            return None
        from ..masks.config import cache_identity, dataset_masks
        from ..masks.run import ALGORITHM_VERSION

        return dataset_masks(ds, masks), stable_hash(
            {**cache_identity(masks), "algorithm": ALGORITHM_VERSION}, 8
        )

    def display_name(self) -> str:
        """How tables and figures label this trained sampler (NST adds its features)."""
        return self.name

    # -- training (a generator class is the recipe; an instance is a trained sampler) ------------
    @classmethod
    def check(cls, train, val, cfg: GeneratorConfig) -> None:
        """Reject data this generator cannot train on, before any job starts."""

    @classmethod
    def stages(cls, train, val, cfg: GeneratorConfig, data_key: str, seed: int) -> list:
        """The `StageSpec`s to train (none for a generator without training, such as NST)."""
        return []

    @classmethod
    def assemble(
        cls, train, cfg: GeneratorConfig, results: dict, data_key: str
    ) -> tuple[dict, dict, dict]:
        """The bundle: (meta, {file stem: state dict}, {file name: bytes}) from the stage results."""
        raise NotImplementedError

    @classmethod
    def bundle_key(cls, cfg: GeneratorConfig, data_key: str, seed: int) -> str:
        return stable_hash(
            {"generator": cls.name, "config": to_plain(cfg), "data": data_key, "seed": seed}
        )

    @classmethod
    def train(
        cls,
        train,
        val,
        cfg: GeneratorConfig,
        out,
        cache_root,
        data_key: str,
        run,
        use_cache: bool = True,
    ):
        """Check, train what the stage cache lacks (one Ray Train job), write the bundle to `out`.

        Returns (bundle folder, {stage label: StageResult})."""
        job = TrainJob(train, val, cfg, Path(out), data_key)
        return cls.train_many({cls.name: job}, cache_root, run, use_cache)[cls.name]

    @classmethod
    def train_many(
        cls, jobs: dict[str, TrainJob], cache_root, run, use_cache: bool = True
    ) -> dict[str, tuple[Path, dict]]:
        """Several trainings of this generator (other settings or data) in ONE Ray Train job, so
        the job's start-up is paid once: every job checked first, then the stages the stage cache
        lacks trained together, then each job's bundle written to its `out`.

        Returns {job key: (bundle folder, {stage label: StageResult})}."""
        from ..training.runner import cached_result, run_stages

        specs, done, order = {}, {}, []
        for key, j in jobs.items():
            cls.check(j.train, j.val, j.cfg)
            for spec in cls.stages(j.train, j.val, j.cfg, j.data_key, run.seed):
                own = spec.label
                order.append((key, own))
                if len(jobs) > 1:
                    # A stage already cached under its own label (a trial trained it) is reused as
                    # it is; the others get the job key in their label, unique within one job.
                    hit = cached_result(spec, Path(cache_root).resolve()) if use_cache else None
                    if hit is not None:
                        print(f"[cache] {own}: reusing {hit.dir}", file=sys.stderr, flush=True)
                        done[key, own] = hit
                        continue
                    spec.label = f"{own}/{key}"
                specs[key, own] = spec
        trained = (
            run_stages(
                list(specs.values()),
                cache_root=cache_root,
                run_cfg=run,
                use_cache=use_cache,
                job=cls.name if len(jobs) == 1 else f"{cls.name}-{len(jobs)}",
            )
            if specs
            else {}
        )
        done.update({ko: trained[spec.label] for ko, spec in specs.items()})
        out = {}
        for key, j in jobs.items():
            results = {own: done[k, own] for k, own in order if k == key}
            meta, states, files = cls.assemble(j.train, j.cfg, results, j.data_key)
            meta = {
                "generator": cls.name,
                "data_key": j.data_key,
                "config": to_plain(j.cfg),
                "stages": list(results),
                **meta,
            }
            grids = {f"grids/{label.replace('/', '_')}": r.grids() for label, r in results.items()}
            out[key] = write_bundle(j.out, meta, states, files, grids), results
        return out

    # -- sampling ---------------------------------------------------------------------------
    classes: list[str]

    @classmethod
    def load(cls, path) -> Generator:
        raise NotImplementedError

    def sample(self, n: int, cls: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """n synthetic images of class `cls` (uint8 [n,S,S,3]) and their masks (bool [n,S,S]) or None."""
        raise NotImplementedError

    def check_class(self, cls: str) -> None:
        if cls not in self.classes:
            raise CytorayError(
                f"class '{cls}' not in this generator (classes: {', '.join(self.classes)})"
            )


def load_bundle(path: str | Path) -> Generator:
    """Load a trained generator bundle (a folder with generator.json) as a sampler."""
    path = Path(path)
    meta_path = path / BUNDLE_META
    if not meta_path.is_file():
        raise CytorayError(
            f"{path}: not a cytoray generator checkpoint (no "
            f"{BUNDLE_META}); pass the --out folder of `cytoray train`"
        )
    from ..bundle import read_bundle

    meta, _ = read_bundle(path)  # not JSON, {}, a list, no 'generator': one line naming the file
    gen_cls = get_generator(meta["generator"])
    # each loader reads its own keys: a missing or
    # mistyped one is the file's fault, never a traceback
    try:
        return gen_cls.load(path)
    except (
        KeyError,
        TypeError,
        ValueError,
        IndexError,
        AttributeError,
        RuntimeError,
    ) as e:  # RuntimeError: weights of other shapes
        what = (
            f"no key {e.args[0]!r}"
            if isinstance(e, KeyError)
            else f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        )
        raise CytorayError(
            f"{path / BUNDLE_META}: not a complete {gen_cls.name!r} "
            f"bundle ({what}); re-copy the bundle or retrain"
        ) from None
