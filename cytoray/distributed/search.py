"""Search spaces from versioned YAML (configs/search/*.yaml), turned into Ray Tune domains.

    space:
      cgan.lam: {dist: qloguniform, low: 10, high: 300, q: 10}   # λ, log scale
      ratio: {dist: choice, values: [0.5, 1, 2, 3]}              # synthetic:real per class

Keys are dotted paths into the study config; every key is checked against it (an unknown
key is an error naming the key and the file) and every sampled point is applied as a
`KEY=VALUE` override, so a trial's config is validated like any other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, _read_yaml

DISTS = {
    "uniform": ("low", "high"),
    "quniform": ("low", "high", "q"),
    "loguniform": ("low", "high"),
    "qloguniform": ("low", "high", "q"),
    "randint": ("low", "high"),
    "choice": ("values",),
}


@dataclasses.dataclass
class SearchSpace:
    source: str
    space: dict[str, dict]

    def to_tune(self) -> dict[str, Any]:
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
                out[key] = fn(d["low"], d["high"], d["q"]) if kind.startswith("q") else fn(d["low"], d["high"])
        return out

    def overrides(self, point: dict[str, Any]) -> list[str]:
        """A sampled point as `KEY=VALUE` overrides (floats rounded to kill q-noise like 0.15000000000000002)."""
        out = []
        for k in self.space:
            v = point[k]
            v = v.item() if hasattr(v, "item") else v  # numpy scalars from Tune's result frames
            if isinstance(v, float):
                v = round(v, 10)
            out.append(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
        return out


def _has_key(cfg: Any, dotted: str) -> bool:
    obj = cfg
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            return False
        obj = getattr(obj, part)
    return not dataclasses.is_dataclass(obj)


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
        if not _has_key(study_cfg, key):
            raise ConfigError(f"{path}: space key '{key}' is not a setting of the study config; use a dotted path such as cgan.lam")
        if not isinstance(d, dict) or d.get("dist") not in DISTS:
            raise ConfigError(f"{path}: space.{key}: 'dist' must be one of {', '.join(DISTS)}")
        need = DISTS[d["dist"]]
        extra = set(d) - set(need) - {"dist"}
        missing = [k for k in need if k not in d]
        if missing or extra:
            what = f"missing '{missing[0]}'" if missing else f"unknown key '{sorted(extra)[0]}'"
            raise ConfigError(f"{path}: space.{key}: {what} ({d['dist']} takes {', '.join(need)})")
        if d["dist"] != "choice" and not d["low"] < d["high"]:
            raise ConfigError(f"{path}: space.{key}: low must be < high")
        if "log" in d["dist"] and d["low"] <= 0:
            raise ConfigError(f"{path}: space.{key}: a log scale needs low > 0")
    return SearchSpace(str(path), space)
