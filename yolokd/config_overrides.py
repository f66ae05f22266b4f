"""``key=value`` overrides of an experiment config: values read as YAML, set at dotted paths (``distill.0.epochs``)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from yolokd.config_errors import ConfigError


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``["epochs=3", "distill.0.cls_weight=2"]`` -> ``{"epochs": 3, "distill.0.cls_weight": 2}`` (YAML values)."""
    overrides = {}
    for arg in args:
        key, has_equals, text = arg.partition("=")
        if not has_equals or not key.strip():
            raise ConfigError(f"'{arg}': expected key=value, e.g. epochs=3 or distill.0.cls_weight=2")
        try:
            overrides[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            overrides[key.strip()] = text
    return overrides


def apply_overrides(config: dict, overrides: Mapping[str, Any]) -> dict:
    """Copy of `config` with each dotted path set; numeric segments index lists, index == length appends."""
    result = copy.deepcopy(dict(config))
    for dotted, value in overrides.items():
        _set_path(result, dotted.split("."), value)
    return result


def _set_path(root: dict, segments: list[str], value: Any) -> None:
    node: Any = root
    for depth, segment in enumerate(segments):
        here, parent = ".".join(segments[: depth + 1]), ".".join(segments[:depth]) or "the config"
        is_last = depth == len(segments) - 1
        if not segment:
            raise ConfigError(f"{here}: empty key in the dotted path")
        new_child = value if is_last else ([] if segments[depth + 1].isdigit() else {})
        if isinstance(node, list):
            if not segment.isdigit():
                raise ConfigError(f"{here}: '{parent}' is a list; index it with a number, e.g. {parent}.0")
            index = int(segment)
            if index > len(node):
                raise ConfigError(
                    f"{here}: index {index} is past the end of '{parent}' ({len(node)} entries); "
                    f"use {parent}.{len(node)} to append an entry"
                )
            if index == len(node):
                node.append(new_child)
            elif is_last:
                node[index] = value
            node = node[index]
        elif isinstance(node, dict):
            if is_last or node.get(segment) is None:
                node[segment] = new_child
            node = node[segment]
        else:
            raise ConfigError(f"{here}: '{parent}' is the value {node!r}, not a mapping or a list")


__all__ = ["apply_overrides", "parse_overrides"]
