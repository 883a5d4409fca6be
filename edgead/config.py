"""Frozen dataclass configs loaded from dicts/TOML that reject unknown keys."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import tomllib

from edgead.errors import ConfigError, unknown_name_error

T = TypeVar("T")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Coerce a JSON/TOML/CLI value to a field's annotated type (int, float, str, bool, tuples)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, annotation, key)
    if origin is tuple:
        return _coerce_tuple(value, typing.get_args(annotation), key)
    if annotation is bool:
        return _coerce_bool(value, key)
    if annotation in (int, float):
        return _coerce_number(value, annotation, key)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    return value


def _coerce_union(value: Any, annotation: Any, key: str) -> Any:
    """The first member type of `annotation` (X | Y | None) that `value` coerces to."""
    args = typing.get_args(annotation)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, key)
        except ConfigError:
            continue
    raise ConfigError(f"config key '{key}': cannot use {value!r} as {annotation}")


def _coerce_tuple(value: Any, args: tuple[Any, ...], key: str) -> tuple[Any, ...]:
    """A tuple from a list, a tuple or a comma-separated string, each item coerced."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
    item_type = args[0] if args else Any
    return tuple(_coerce(v, item_type, key) for v in value)


def _coerce_bool(value: Any, key: str) -> bool:
    """A bool from a bool or a true/false, 1/0, yes/no string."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")


def _coerce_number(value: Any, annotation: type[int] | type[float], key: str) -> int | float:
    """An int or float from a number or numeric string (bools and fractional ints refused)."""
    if isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    try:
        number = annotation(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"config key '{key}': expected {annotation.__name__}, got {value!r}"
        ) from exc
    if annotation is int and isinstance(value, float) and value != number:
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    return number


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a dataclass `cls` from `data`, rejecting unknown keys and coercing values.

    Raises:
        ConfigError: a key is unknown (the message names it) or a value has the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_name_error(f"key for {cls.__name__}", key, fields)
        kwargs[key] = _coerce(value, hints[key], key)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass (tuples become lists)."""
    data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(obj)))
    return data


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file into a dict, with a ConfigError naming the file on failure."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ['a=1', 'b=x'] from `--set` into {'a': '1', 'b': 'x'} (typed later by from_dict)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got '{pair}'")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out
