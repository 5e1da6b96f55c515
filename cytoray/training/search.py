"""Search spaces from versioned YAML (configs/search/*.yaml), turned into Ray Tune domains.

    space:
      generator.cgan.lam: {dist: loguniform, low: 10, high: 1000}   # λ, log scale
      ratio: {dist: choice, values: [0.5, 1, 2, 3]}                 # synthetic:real per class

Keys are dotted paths into the study config; every key is checked against it (an unknown key
is an error naming the key and the file). The Tune space is nested like the config, so a
sampled point is itself a nested mapping that is merged into the config as values (never
through strings) and validated like any other config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config import ConfigError, _read_yaml, deep_merge, flatten

DISTS = {
    "uniform": ("low", "high"),
    "quniform": ("low", "high", "q"),
    "loguniform": ("low", "high"),
    "qloguniform": ("low", "high", "q"),
    "randint": ("low", "high"),
    "choice": ("values",),
}


def nest(flat: dict[str, Any]) -> dict:
    """{'a.b': 1} → {'a': {'b': 1}}."""
    out: dict = {}
    for key, v in flat.items():
        *parents, leaf = key.split(".")
        d = out
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = v
    return out


def plain(v: Any) -> Any:
    """A sampled value as plain YAML-able Python: numpy scalars unwrapped, q-noise rounded away."""
    v = v.item() if hasattr(v, "item") else v
    return round(v, 10) if isinstance(v, float) else v  # 0.15000000000000002 → 0.15


@dataclasses.dataclass
class SearchSpace:
    source: str
    space: dict[str, dict]  # dotted key → distribution

    def to_tune(self) -> dict[str, Any]:
        """The nested Tune param_space (OptunaSearch flattens and re-nests it itself)."""
        return nest(self.domains())

    def domains(self) -> dict[str, Any]:
        """{dotted key: Tune domain}."""
        from ray import tune

        out = {}
        for key, d in self.space.items():
            kind = d["dist"]
            if kind == "choice":
                out[key] = tune.choice(list(d["values"]))
            elif kind == "randint":
                out[key] = tune.randint(d["low"], d["high"])
            else:
                fn = getattr(tune, kind)
                out[key] = (
                    fn(d["low"], d["high"], d["q"])
                    if kind.startswith("q")
                    else fn(d["low"], d["high"])
                )
        return out

    def values(self, point: dict) -> dict[str, Any]:
        """A (nested) sampled point restricted to the space's keys, as {dotted key: plain value}."""
        flat = flatten(point)
        return {k: plain(flat[k]) for k in self.space if k in flat}

    def apply(self, base: dict, point: dict) -> dict:
        """`base` (a config as a mapping) with the point's values merged in as nested values."""
        return deep_merge(base, nest(self.values(point)))


def has_key(cfg: Any, dotted: str) -> bool:
    """Is `dotted` a leaf setting of `cfg` (dataclasses and mappings of them)?"""
    obj = cfg
    for part in dotted.split("."):
        if dataclasses.is_dataclass(obj) and part in {f.name for f in dataclasses.fields(obj)}:
            obj = getattr(obj, part)
        elif isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            return False
    return not dataclasses.is_dataclass(obj) and not isinstance(obj, dict)


def _check_bounds(path: Path, key: str, d: dict, study_cfg: Any) -> None:
    """Bounds are finite numbers (`low: a` was a TypeError inside Tune), a choice has values (`[]`
    failed after Ray started), and every end of the range is a valid config, checked like a file."""
    import math

    from ..config import from_dict, to_dict

    if d["dist"] == "choice":
        if not isinstance(d["values"], list) or not d["values"]:
            raise ConfigError(f"{path}: space.{key}.values: give a non-empty list of values")
        ends = list(d["values"])
    else:
        for k in DISTS[d["dist"]]:
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{path}: space.{key}.{k}: {v!r} is not a finite number")
        if d["dist"] == "randint" and not all(isinstance(d[k], int) for k in ("low", "high")):
            raise ConfigError(f"{path}: space.{key}: randint takes whole-number low and high")
        if "q" in d and d["q"] <= 0:
            raise ConfigError(f"{path}: space.{key}.q: must be > 0")
        ends = [d["low"], d["high"] - 1 if d["dist"] == "randint" else d["high"]]
    base = to_dict(study_cfg)
    for v in ends:
        from_dict(type(study_cfg), deep_merge(base, nest({key: v})), f"{path}: space.{key}={v!r}")


def load_search_space(path: str | Path, study_cfg: Any) -> SearchSpace:
    path = Path(path)
    data = _read_yaml(path)
    unknown_top = set(data) - {"space"}
    if unknown_top:
        raise ConfigError(f"{path}: unknown key '{sorted(unknown_top)[0]}' (valid keys: space)")
    space = data.get("space") or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: 'space' must map config keys to distributions")
    for key, d in space.items():
        if not has_key(study_cfg, key):
            raise ConfigError(
                f"{path}: space key '{key}' is not a setting of the study "
                "config; use a dotted path such as generator.cgan.lam"
            )
        if not isinstance(d, dict) or d.get("dist") not in DISTS:
            raise ConfigError(f"{path}: space.{key}: 'dist' must be one of {', '.join(DISTS)}")
        need = DISTS[d["dist"]]
        extra = set(d) - set(need) - {"dist"}
        missing = [k for k in need if k not in d]
        if missing or extra:
            what = f"missing '{missing[0]}'" if missing else f"unknown key '{sorted(extra)[0]}'"
            raise ConfigError(f"{path}: space.{key}: {what} ({d['dist']} takes {', '.join(need)})")
        _check_bounds(path, key, d, study_cfg)
        if d["dist"] != "choice" and not d["low"] < d["high"]:
            raise ConfigError(f"{path}: space.{key}: low must be < high")
        if "log" in d["dist"] and d["low"] <= 0:
            raise ConfigError(f"{path}: space.{key}: a log scale needs low > 0")
    return SearchSpace(str(path), space)
