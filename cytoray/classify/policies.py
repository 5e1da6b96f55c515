"""Training-set policies: which images a classifier trains on (SynCGAN Tab. 2 and 3).

A policy is a '+'-joined list of sources:

- `orig`: the real training images;
- `trad`: traditional augmented copies of them (flips, rotation, noise; `augment.py`);
- any other token: a registered generator (`cytoray.generators.GENERATORS`), whose trained
  sampler draws class-conditional synthetic images. A generator that registers later
  (`cyclegan`, `nst`, `refined-sim`, ...) works as a policy token with no change here.

Named policies, checked first, follow the paper's tables:

| name          | sources               | paper column              | aliases                                |
| ------------- | --------------------- | ------------------------- | -------------------------------------- |
| orig          | orig                  | Orig                      | real                                   |
| trad          | orig + trad           | Orig+Trad                 | orig+trad                              |
| syncgan       | orig + syncgan        | Orig+Prop                 | orig+syncgan, orig+prop                |
| trad+syncgan  | orig + trad + syncgan | Orig+Trad+Prop            | orig+trad+syncgan, orig+trad+prop      |
| syncgan-only  | syncgan               | Prop (Tab. 3)             | prop                                   |
| gan           | gan (vanilla RGB GAN) | GAN (Tab. 3)              | gan-only                               |
| orig+gan      | orig + gan            | Orig+GAN (Tab. 3)         |                                        |

Any other string is parsed token by token, so `cyclegan` means cyclegan images only and
`orig+cyclegan` adds real images. Two rules keep this in line with the paper's naming:
`trad` always brings `orig` along (the paper's "Trad" is always "Orig+Trad", so `trad+gan`
is real + copies + GAN), and `<policy>-only` drops `orig` (`trad-only`: copies alone). Bare
`syncgan` is the one named exception: it means real + SynCGAN, the paper's headline variant.

Counts: per class, each non-real source adds `round(ratio * n_real_c)` images (half rounds
up), so ratio 2 gives 90 synthetic per class beside 45 real, as in SynCGAN §4.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Protocol

import numpy as np

from ..data.folder import ImageSet
from ..errors import CytorayError
from ..io import stable_hash
from .augment import traditional_copies
from .config import AugmentConfig

REAL, TRAD = "orig", "trad"

# canonical name → sources (in canonical order: orig, trad, then generators)
POLICIES: dict[str, tuple[str, ...]] = {
    "orig": (REAL,),
    "trad": (REAL, TRAD),
    "syncgan": (REAL, "syncgan"),
    "trad+syncgan": (REAL, TRAD, "syncgan"),
    "syncgan-only": ("syncgan",),
    "gan": ("gan",),
    "orig+gan": (REAL, "gan"),
}
ALIASES: dict[str, str] = {
    "real": "orig",
    "orig+trad": "trad",
    "orig+syncgan": "syncgan",
    "orig+prop": "syncgan",
    "orig+trad+syncgan": "trad+syncgan",
    "orig+trad+prop": "trad+syncgan",
    "prop": "syncgan-only",
    "gan-only": "gan",
}


_BY_SOURCES = {v: k for k, v in POLICIES.items()}


class Sampler(Protocol):
    """A trained generator: `sample(n, cls, seed)` → uint8 [n,S,S,3] (or (images, masks|None))."""

    def sample(self, n: int, cls: str, seed: int = 0): ...


# ----------------------------------------------------------------------------- parsing


@dataclasses.dataclass(frozen=True)
class Policy:
    # canonical name: a POLICIES key, or the ordered '+'-joined sources (parses back to itself)
    name: str
    sources: tuple[str, ...]  # orig first, then trad, then generators sorted by name

    @property
    def real(self) -> bool:
        return REAL in self.sources

    @property
    def trad(self) -> bool:
        return TRAD in self.sources

    @property
    def generators(self) -> tuple[str, ...]:
        return tuple(s for s in self.sources if s not in (REAL, TRAD))


def _registered() -> list[str]:
    from ..generators import generator_names

    return generator_names()


def _unknown(policy: str, token: str) -> CytorayError:
    names = list(POLICIES) + [f"{a} (= {c})" for a, c in ALIASES.items()]
    return CytorayError(
        f"policy {policy!r}: unknown source {token!r}; valid policies: {', '.join(names)}; or join "
        f"'orig', 'trad' and registered generators ({', '.join(_registered()) or 'none'}) with '+'"
    )


def parse_policy(policy: str) -> Policy:
    """Resolve a policy string (name, alias or '+'-joined sources) to its sources."""
    if not isinstance(policy, str) or not policy.strip():
        raise CytorayError(
            f"policy {policy!r}: give a non-empty name such as {', '.join(POLICIES)}"
        )
    key = "+".join(t.strip() for t in policy.strip().lower().split("+"))
    key = ALIASES.get(key, key)
    if key in POLICIES:
        return Policy(key, POLICIES[key])
    only = key.endswith("-only")
    stem = key.removesuffix("-only")
    sources = POLICIES[stem] if stem in POLICIES else tuple(stem.split("+"))
    if TRAD in sources and REAL not in sources:
        sources = (REAL, *sources)  # "Trad" in the paper always means "Orig+Trad"
    if only:
        sources = tuple(s for s in sources if s != REAL)
    registered = _registered()
    seen: set[str] = set()
    for t in sources:
        if t in seen:
            raise CytorayError(
                f"policy {policy!r}: source {t!r} appears twice; name each source once"
            )
        seen.add(t)
        if t not in (REAL, TRAD) and t not in registered:
            raise _unknown(policy, t)
    if not sources:
        raise CytorayError(
            f"policy {policy!r}: has no sources left; "
            "'-only' drops 'orig', add a generator or 'trad'"
        )
    ordered = tuple(s for s in (REAL, TRAD) if s in sources) + tuple(
        sorted(s for s in sources if s not in (REAL, TRAD))
    )
    name = _BY_SOURCES.get(ordered, "+".join(ordered))
    if name in POLICIES and POLICIES[name] != ordered:
        name += "-only"  # e.g. copies alone: "trad" already means real + copies
    return Policy(name, ordered)


def generators_needed(policies: str | Iterable[str]) -> set[str]:
    """Generator names the policies draw from: train each once per split, reuse for all."""
    if isinstance(policies, str):
        policies = [policies]
    return {g for p in policies for g in parse_policy(p).generators}


def n_extra(ratio: float, n_real: int) -> int:
    """Images a non-real source adds for a class with `n_real` real images (half rounds up)."""
    return int(np.floor(ratio * n_real + 0.5))


# ----------------------------------------------------------------------------- composing


def _seed_for(seed: int, source: str, cls: str) -> int:
    """A stable per-(seed, source, class) stream: policies that share a generator share its draws."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{source}:{cls}".encode()).digest()[:4], "little")


def _draw(sampler: Sampler, gen: str, n: int, cls: str, seed: int, shape: tuple[int, ...]):
    out = sampler.sample(n, cls, seed=seed)
    images, masks = out if isinstance(out, tuple) else (out, None)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape != (n, *shape):
        raise CytorayError(
            f"generator {gen!r} returned {images.dtype} images of shape {images.shape} for class "
            f"{cls!r}; expected uint8 {(n, *shape)} (train the generator at the data's image size)"
        )
    return images, None if masks is None else np.asarray(masks, dtype=bool)


def compose_training_set(
    policy: str | Policy,
    real_train: ImageSet,
    ratio: float,
    samplers: Mapping[str, Sampler],
    rng_seed: int,
    augment: AugmentConfig | None = None,
) -> ImageSet:
    """The training set a policy asks for: real, traditional copies and/or synthetic images.

    Per class c every non-real source adds `n_extra(ratio, n_real_c)` images labelled c.
    Synthetic names read `synth:<generator>/<class>/<0007>`, copies `trad:<real name>/<k>`.
    Raises CytorayError (before any sampling) for a bad policy, a negative ratio or a
    generator without a sampler.
    """
    pol = policy if isinstance(policy, Policy) else parse_policy(policy)
    if not np.isfinite(ratio) or ratio < 0:
        raise CytorayError(f"ratio={ratio}: the synthetic:real ratio must be >= 0 (SynCGAN uses 2)")
    missing = [g for g in pol.generators if g not in samplers]
    if missing:
        raise CytorayError(
            f"policy {pol.name!r} needs generator {missing[0]!r} but no trained "
            f"sampler was given (have: {', '.join(sorted(samplers)) or 'none'}); "
            "train it first or drop it from the policy"
        )
    shape = tuple(real_train.images.shape[1:])
    keep_masks = real_train.masks is not None or not (pol.real or pol.trad)
    parts: list[
        tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]
    ] = []  # images, labels, names, masks
    for c, cls in enumerate(real_train.class_names):
        idx = np.nonzero(real_train.labels == c)[0]
        k = n_extra(ratio, len(idx))
        lab = lambda n: np.full(n, c, np.int64)  # noqa: E731
        if pol.real:
            real_masks = None if real_train.masks is None else real_train.masks[idx]
            parts.append(
                (
                    real_train.images[idx],
                    lab(len(idx)),
                    [real_train.names[i] for i in idx],
                    real_masks,
                )
            )
        if pol.trad and k:
            rng = np.random.default_rng(_seed_for(rng_seed, TRAD, cls))
            masks = None if real_train.masks is None else real_train.masks[idx]
            imgs, cmasks, src = traditional_copies(
                real_train.images[idx], rng, n_total=k, masks=masks, cfg=augment
            )
            seen: dict[int, int] = {}
            names = []
            for s in src.tolist():
                seen[s] = seen.get(s, -1) + 1
                names.append(f"trad:{real_train.names[idx[s]]}/{seen[s]}")
            parts.append((imgs, lab(k), names, cmasks))
        for g in pol.generators:
            if not k:
                continue
            imgs, gmasks = _draw(samplers[g], g, k, cls, _seed_for(rng_seed, g, cls), shape)
            keep_masks = keep_masks and gmasks is not None
            parts.append((imgs, lab(k), [f"synth:{g}/{cls}/{j:04d}" for j in range(k)], gmasks))
    if not parts or not sum(len(p[1]) for p in parts):
        raise CytorayError(
            f"policy {pol.name!r} at ratio={ratio} gives an empty training set; raise the ratio"
        )
    keep_masks = keep_masks and all(p[3] is not None for p in parts)
    images = np.concatenate([p[0] for p in parts])
    names = [n for p in parts for n in p[2]]
    return ImageSet(
        images=images,
        labels=np.concatenate([p[1] for p in parts]),
        class_names=real_train.class_names,
        names=names,
        sha256=[hashlib.sha256(im.tobytes()).hexdigest() for im in images],
        masks=np.concatenate([p[3] for p in parts]) if keep_masks else None,
        groups=None,
        source=f"policy:{pol.name}:ratio={ratio:g}:seed={rng_seed}:{real_train.source}",
    )


def set_key(ds: ImageSet) -> str:
    """Content hash of an ImageSet (names, image hashes, labels): the policy composition in a cache key."""
    return stable_hash(
        {
            "classes": list(ds.class_names),
            "items": list(zip(ds.names, ds.sha256, ds.labels.tolist())),
        }
    )
