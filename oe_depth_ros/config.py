"""Configuration as data: YAML files loaded into dataclasses, validated on load.

Unknown keys, missing required keys and wrongly typed values raise ``ConfigError``
naming the key (with its dotted path) and the file it came from.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")

#: A decimal number in exponent notation without a dot ("1e-4"): YAML 1.1, which PyYAML
#: follows, reads it as a string, yet everyone writes learning rates that way.
_EXPONENT_NUMBER = re.compile(r"[+-]?\d+[eE][+-]?\d+")


#: Field metadata key of a dataclass field whose value the dataclass checks itself (a
#: node parameter, checked by its ``__post_init__``): :func:`from_dict` passes the value
#: on unchecked so that it is checked once.
CHECKED_BY_DATACLASS = "oe_depth_ros.checked_by_dataclass"


class ConfigError(ValueError):
    """A configuration file or mapping has a bad key or value."""


def load_yaml(path: str | Path) -> dict[str, object]:
    """Read a YAML mapping; an empty file gives ``{}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _check_value(value: object, tp: object, where: str) -> object:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            try:
                return _check_value(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if typing.get_origin(tp) is typing.Literal:
        # YAML 1.1 reads on/off (and yes/no, true/false) as booleans
        if isinstance(value, bool) and ("on" if value else "off") in args:
            return "on" if value else "off"
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_check_value(v, a, f"{where}[{i}]")
                         for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_check_value(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _check_value(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, object], source: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and bad types.

    Nested dataclasses are built recursively; ``source`` prefixes every error message
    (e.g. the file name) so that the bad key can be found.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, field in fields.items():
        if name in data and field.metadata.get(CHECKED_BY_DATACLASS):
            kwargs[name] = data[name]  # checked and normalized by the dataclass
        elif name in data:
            kwargs[name] = _check_value(data[name], hints[name], f"{source}: key '{name}'")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{name}'")
    try:
        return cls(**kwargs)  # type: ignore[return-value]
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{source}: {exc}") from exc


def to_dict(obj: object) -> dict[str, object]:
    """Dataclass to plain dict (tuples become lists), suitable for YAML or JSON."""
    def conv(v: object) -> object:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    out = conv(obj)
    if not isinstance(out, dict):
        raise TypeError(f"to_dict needs a dataclass, got {type(obj).__name__}")
    return out


def apply_overrides(data: dict[str, object], overrides: list[str]) -> dict[str, object]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested mapping copy."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out
