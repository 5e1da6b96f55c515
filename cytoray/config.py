"""Typed configuration: dataclasses with defaults, strict YAML loading.

Every key has a default in its dataclass and a one-line reason in `configs/`. A YAML file
may name a base file with `_base_: relative/path.yaml` and then holds only differences.
Unknown keys are errors that name the key and the file; `validate()` rejects incompatible
combinations before any job starts. Networks never see these objects: configs are turned
into keyword arguments at the edge.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


# ----------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg, *_) = typing.get_args(tp) or (Any,)
        out = [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        (_, arg) = typing.get_args(tp) or (str, Any)
        if _is_section(arg):  # {name: section}: the key names the plugin
            return {
                k: _coerce(
                    v if not isinstance(v, dict) or "name" in v else {"name": k, **v},
                    arg,
                    f"{where}.{k}",
                )
                for k, v in value.items()
            }
        return {k: _coerce(v, arg, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {_type_name(tp)}, got {value!r}")
        if _is_section(tp):
            if not isinstance(value.get("name"), str):
                raise ConfigError(
                    f"{where}: give its 'name' (one of {', '.join(tp.section_names())})"
                )
            tp = tp.section_class(value["name"], where)
        return _build(tp, value, where)
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value} is not a finite number; give a real value")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{unknown[0]}' (valid keys: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for k, v in data.items():
        f = fields[k]
        if isinstance(v, dict) and f.default_factory is not dataclasses.MISSING:
            v = _with_defaults(f.default_factory(), v)
        kwargs[k] = _coerce(v, hints[k], f"{where}.{k}")
        if (
            (k == "lr" or k.startswith("lr_"))
            and isinstance(kwargs[k], float)
            and not 0 < kwargs[k] <= 10
        ):
            # a learning rate of 1e300 overflows the optimiser's
            # first step, after the data and the workers
            raise ConfigError(
                f"{where}.{k}={kwargs[k]:g}: a learning rate is above 0 and at most 10 (e.g. 2e-4)"
            )
    return cls(**kwargs)


class Section:
    """A config section whose dataclass is chosen by its `name` key: a plugin's own typed Config
    (e.g. `generator: {name: syncgan, cgan: {lam: 50}}`). Subclasses are dataclasses with a
    `name` field and say how a name resolves (an unknown name is an error listing the known ones)."""

    @classmethod
    def section_class(cls, name: str, where: str) -> type:
        raise NotImplementedError

    @classmethod
    def section_names(cls) -> list[str]:
        raise NotImplementedError


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Section)


def to_plain(obj: Any) -> Any:
    """Dataclasses (also inside mappings and lists) as plain mappings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def _with_defaults(default: Any, over: dict) -> dict:
    """A partial mapping for a nested config starts from the parent's own default for it (e.g. a
    study whose classifier defaults to smallcnn keeps smallcnn under `classifier.epochs=2`), except
    where it names another plugin than the default's: that one starts from its own defaults."""
    if dataclasses.is_dataclass(default):
        if isinstance(default, Section) and over.get("name", default.name) != default.name:
            return over
        return deep_merge(dataclasses.asdict(default), over)
    if isinstance(default, dict):
        out = to_plain(default)
        for k, v in over.items():
            out[k] = _with_defaults(default[k], v) if k in default and isinstance(v, dict) else v
        return out
    return over


def from_dict(cls: type[T], data: dict | None, source: str = "<dict>", check: bool = True) -> T:
    """Build a config dataclass from a mapping; unknown keys raise ConfigError naming `source`.
    `check=False` skips the dataclasses' `validate()` (settings already checked when the study's
    config was loaded, e.g. a trainer stage's)."""
    obj = _build(cls, data or {}, source)
    if check:
        validate(obj, source)
    return obj


# A config is a few kB: these limits refuse a runaway file (a 50 MB YAML, an alias bomb, 100,000
# levels of brackets) in milliseconds instead of parsing it for minutes or overflowing the stack.
MAX_YAML_BYTES = 1 << 20  # one config file
MAX_YAML_NODES = 100_000  # values in a document once its aliases (*x) are expanded
MAX_YAML_DEPTH = 100  # nesting of mappings/sequences
# `_base_` may reach into the configs tree
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys (YAML says last wins, silently) and nesting
    deeper than MAX_YAML_DEPTH (PyYAML composes recursively)."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"nested more than {MAX_YAML_DEPTH} levels deep (line "
                    f"{self.peek_event().start_mark.line + 1}); a config is a few levels of keys"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise ConfigError(
                        f"key '{key}' given twice (line {key_node.start_mark.line + 1}); keep one"
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, memo: dict) -> int:
    """Values in the document with every alias expanded (an alias bomb: 9 aliases of 9 aliases ...)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a cycle counts once
    n = 1
    if isinstance(node, yaml.SequenceNode):
        n += sum(_expanded_size(c, memo) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = n = min(n, MAX_YAML_NODES + 1)
    return n


def load_yaml(text: str | bytes, where: str) -> Any:
    """Parse one YAML document safely (no tags that build objects, size/alias/depth limits,
    duplicate keys refused); every problem is a one-line ConfigError naming `where`."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{where}: {len(text)} bytes, over the {MAX_YAML_BYTES} "
            "a config may hold; give a config file"
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{where}: not UTF-8 (byte {text[e.start]:#x} "
                f"at offset {e.start}); save the file as UTF-8"
            ) from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(
                f"expands to more than {MAX_YAML_NODES} values "
                "through its aliases (*name); write the values out"
            )
        return loader.construct_document(node)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"{where}: not valid YAML ({str(e).splitlines()[0]}); fix the syntax"
        ) from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply; a config is a few levels of keys") from None
    finally:
        loader.dispose()


def _base_path(path: Path, base: Any) -> Path:
    """`_base_` relative to the file, staying inside its folder or the configs tree: a config names
    another config, never /etc/passwd or ../../secret.yaml."""
    if not isinstance(base, str) or not base or Path(base).is_absolute() or base.startswith("~"):
        raise ConfigError(
            f"{path}: _base_: {base!r}: give a relative "
            f"path to a YAML file beside it or in {CONFIGS}"
        )
    target = (path.parent / base).resolve()
    if not any(target.is_relative_to(root) for root in (path.parent.resolve(), CONFIGS)):
        raise ConfigError(
            f"{path}: _base_: {base} leads outside its folder "
            f"and {CONFIGS}; copy the base file beside it"
        )
    return target


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass an existing YAML file")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: _base_ chain loops back on itself")
    if path.stat().st_size > MAX_YAML_BYTES:  # refused before reading it
        raise ConfigError(
            f"{path}: {path.stat().st_size} bytes, over the "
            f"{MAX_YAML_BYTES} a config may hold; give a config file"
        )
    data = load_yaml(path.read_bytes(), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    base = data.pop("_base_", None)
    if base is None:
        return data
    return deep_merge(_read_yaml(_base_path(path, base), seen + (path.resolve(),)), data)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def parse_override(item: str) -> dict:
    """`a.b.c=3` → {'a': {'b': {'c': 3}}} (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. cgan.epochs=5")
    key, raw = item.split("=", 1)
    if any(not part.strip() for part in key.split(".")):
        raise ConfigError(
            f"override '{item}': '{key}' has an empty key name; give KEY=VALUE, e.g. cgan.epochs=5"
        )
    if len(raw) > 10_000:
        raise ConfigError(
            f"override '{key}': value of {len(raw)} characters; a config value is short"
        )
    value = load_yaml(raw, f"override '{key}'") if raw else None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict | None = None,
) -> T:
    """Load `cls` from a YAML file (or defaults), then nested `values` (e.g. paths from command-line
    flags, never parsed as YAML), then `KEY=VALUE` overrides on top."""
    if (
        path
        and not Path(path).is_file()
        and not Path(path).is_absolute()
        and (CONFIGS.parent / path).is_file()
    ):
        # a study's default `configs/...` from outside the repository root
        path = CONFIGS.parent / path
    data = _read_yaml(Path(path)) if path else {}
    source = str(path) if path else "<defaults>"
    if values:
        data = deep_merge(data, values)
    if overrides:
        for item in overrides:
            data = deep_merge(data, parse_override(item))
        source = f"{source} + overrides"
    return from_dict(cls, data, source)


def validate(obj: Any, source: str) -> None:
    """Call `validate()` on the config and every nested config; errors name the file."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        for item in v.values() if isinstance(v, dict) else [v]:
            if dataclasses.is_dataclass(item):
                validate(item, source)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1} (MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class DataConfig:
    root: str | None = None  # folder dataset <root>/<class>/*.png; None = embedded simulator
    size: int = 64  # square side in px after resize + centre crop (64 for CPU budgets)
    magnification: int | None = None  # BreakHis filter (40/100/200/400); None keeps all
    classes: list[str] | None = None  # restrict/order classes; None = every class folder
    # train:val:test
    split_ratios: list[float] = dataclasses.field(default_factory=lambda: [3.0, 1.0, 1.0])
    split_seed: int = 0  # seeds the stratified split (same seed, same manifest)
    n_splits: int = 1  # K seeded splits for repeated evaluation (seeds split_seed..+K-1)
    near_duplicate_bits: int = 4  # perceptual-hash Hamming distance counted as a near-duplicate
    sim_n: int = 150  # embedded simulator: images in all (75 per class, as in SynCGAN)
    sim_seed: int = 0  # embedded simulator seed
    sim_kind: typing.Literal["cytology", "histology"] = "cytology"  # which embedded domain
    # flat edge bands (scanner margins, square padding) cut off before resizing
    padding: typing.Literal["crop", "keep"] = "crop"

    def validate(self) -> None:
        if self.size < 16:
            raise ConfigError(f"data.size={self.size}: must be at least 16 px")
        if (
            len(self.split_ratios) != 3
            or any(r < 0 for r in self.split_ratios)
            or self.split_ratios[0] <= 0
        ):
            raise ConfigError(
                f"data.split_ratios={self.split_ratios}: give three "
                "non-negative train:val:test weights, train > 0"
            )
        if self.n_splits < 1:
            raise ConfigError(f"data.n_splits={self.n_splits}: must be >= 1")
        if self.split_seed < 0 or self.sim_seed < 0:
            raise ConfigError(
                f"data.split_seed={self.split_seed}, "
                f"data.sim_seed={self.sim_seed}: seeds must be >= 0"
            )
        if self.sim_n < 4:
            raise ConfigError(f"data.sim_n={self.sim_n}: the simulator needs at least 4 images")
