"""A config section onto its parameters dataclass (a loss's ``Params``, ``Schedule``, ``Balance``): unknown keys (with a
"did you mean"), renamed keys, value types against the type hints and ranges (``__post_init__``) become ConfigErrors.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from ultralytics.utils import LOGGER

from yolokd.config_errors import ConfigError, did_you_mean


def build_dataclass(cls: type, config: dict[str, Any], path: str, extra_keys: Sequence[str] = (), owner: str = ""):
    """Instantiate a parameters dataclass from `config`: unknown keys, types and ranges become ConfigErrors."""
    config = _renamed_keys(config, dict(getattr(cls, "renamed_fields", ())), path)
    names = [field.name for field in fields(cls)]
    for key in config:
        if key not in names:
            where = f" for {owner}" if owner else ""
            valid = ", ".join([*extra_keys, *names])
            raise ConfigError(f"{path}.{key}: unknown key{where}{did_you_mean(key, names)}. Valid keys: {valid}")
    hints = typing.get_type_hints(cls)
    values = {key: _check_type(value, hints[key], f"{path}.{key}") for key, value in config.items()}
    try:
        return cls(**values)
    except ValueError as error:
        bad_key = next((name for name in names if str(error).startswith(f"{name}=")), None)
        raise ConfigError(f"{path}.{bad_key}: {error}" if bad_key else f"{path}: {error}") from None


def _renamed_keys(config: dict[str, Any], renamed: Mapping[str, str], path: str) -> dict[str, Any]:
    """`config` with each former field name (``renamed``: {old: new}) read as the new one, with a one-line warning;
    a ConfigError when both names are given."""
    result = {}
    for key, value in config.items():
        new = renamed.get(key)
        if new is None:
            result[key] = value
            continue
        if new in config:
            raise ConfigError(f"{path}.{key}: the former name of '{new}', which is set too; keep only {new}")
        LOGGER.warning(f"yolokd: {path}.{key} is deprecated, renamed to '{new}'; read as {new}: {value!r}")
        result[new] = value
    return result


def _check_type(value: Any, hint: Any, path: str) -> Any:
    """Return `value` (ints widened to float, lists to tuples as the hint says) or raise a ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            try:
                return _check_type(value, arm, path)
            except ConfigError:
                continue
    elif origin in (list, tuple):
        if isinstance(value, (list, tuple)):
            items = [_check_type(item, args[0] if args else Any, f"{path}.{i}") for i, item in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif origin is typing.Literal:
        if value in args:
            return value
    elif isinstance(value, bool) and hint in (int, float):
        pass  # a bool is an int to Python, never a number in a config
    elif hint is float and isinstance(value, (int, float)):
        return float(value)
    elif origin is None and isinstance(value, hint):
        return value
    raise ConfigError(f"{path}: expected {_type_name(hint)}, got {_value_description(value)}")


def _type_name(hint: Any) -> str:
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string", type(None): "null"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arm) for arm in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in typing.get_args(hint))
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _value_description(value: Any) -> str:
    if isinstance(value, bool):
        return f"the bool {str(value).lower()}"
    if not isinstance(value, str):
        return f"{type(value).__name__} {value!r}"
    try:
        float(value)
    except ValueError:
        return f"the string {value!r}"
    return f"the string {value!r} (YAML reads numbers like 1e-3 as strings; write 1.0e-3 or 0.001)"


__all__ = ["build_dataclass"]
