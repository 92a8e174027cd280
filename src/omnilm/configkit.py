"""Validated dataclass configs: one way to read, check and override every omnilm config.

A config is a (nested) dataclass with annotated fields and a `validate(path)` method of range checks.
`coerce(cls, mapping, path)` builds one from YAML/JSON data; `check_fields(obj)` normalises and checks
every field of a built one against its annotation (numbers in float fields, `1e-3` strings that YAML
reads as text, lists for tuples, nested sections from mappings). Every problem is a `ConfigError` that
names the field (`optim.lr: expected a number, got 'fast'`), never a TypeError traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from omnilm.errors import ConfigError


def require(condition: bool, field_path: str, message: str) -> None:
    """Raise ConfigError(`field_path: message`) unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{field_path}: {message}", field=field_path)


def coerce(cls: type, value: Any, path: str, *, root: str = "config") -> Any:
    """Dataclass `cls` from a mapping (an instance or None passes through), fields checked and named
    (`path` is the mapping's own field path; "" for a whole file, named `root` in messages)."""
    if value is None or isinstance(value, cls):
        return value
    where = path or root
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(value).__name__}", field=path)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    require(not unknown, where, f"unknown field(s) {unknown}; valid fields are {sorted(fields)}")
    missing = sorted(name for name, f in fields.items() if name not in value and _required(f))
    require(not missing, where, f"missing field(s) {missing}")
    kwargs = {name: _check(item, hints[name], _join(path, name)) for name, item in value.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # a check in __post_init__ that is not yet a ConfigError
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where}: {err}", field=path) from None


def check_fields(obj: Any, path: str = "") -> None:
    """Normalise and check, in place, every field of dataclass `obj` and of the sections nested in it."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):  # object.__setattr__: frozen dataclasses are normalised too
        object.__setattr__(obj, f.name, _check(getattr(obj, f.name), hints[f.name], _join(path, f.name)))


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in a YAML or JSON file; ConfigError when the file is missing, unreadable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"{what} {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of fields, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each `a.b.c=value` (value parsed as YAML: numbers, lists, null) in nested `data`; returns `data`."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        *parents, leaf = key.split(".")
        node = data
        for depth, name in enumerate(parents):
            child = node.get(name)
            if child is None:
                child = node[name] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parents[: depth + 1])} is not a section")
            node = child
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return data


# Checking one value against its annotation ------------------------------------------------------------
def _check(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        fitting = [a for a in options if _fits(value, a)]
        if len(fitting) == 1:  # the one type this kind of value can be: its own error names the field inside
            return _check(value, fitting[0], where)
        for arg in fitting or options:
            try:
                return _check(value, arg, where)
            except ConfigError:
                continue
        raise _wrong(value, hint, where)
    if not _fits(value, hint):
        raise _wrong(value, hint, where)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return coerce(hint, value, where)
        check_fields(value, where)
        return value
    if hint is float:  # an int, a float, or a string: YAML reads 1e-3 (no dot) as one
        try:
            return float(value)
        except ValueError:
            raise _wrong(value, hint, where) from None
    if origin in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            require(len(value) == len(args), where, f"expected {len(args)} values, got {len(value)}")
            return tuple(_check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        checked = [_check(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        return {k: _check(v, args[1] if args else Any, _join(where, str(k))) for k, v in value.items()}
    return value


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` is of the kind `hint` describes (a mapping for a section, a list for a list, …)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    if origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if hint is float:
        return isinstance(value, (int, float, str)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _wrong(value: Any, hint: Any, where: str) -> ConfigError:
    return ConfigError(f"{where}: expected {_describe(hint)}, got {value!r}", field=where)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if dataclasses.is_dataclass(hint):
        return f"a mapping ({hint.__name__})"
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(hint, str(hint))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
