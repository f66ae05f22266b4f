"""Where experiment YAMLs are: a file by its path, or a shipped config (``yolokd/cfg/*.yaml``) by its name from any
folder; and reading one into a mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from yolokd.config_errors import ConfigError, did_you_mean

SHIPPED_CONFIG_DIR = Path(__file__).resolve().parent / "cfg"  # package data: travels with every install


def shipped_configs() -> list[str]:
    """File names of the experiment configs shipped with yolokd (``yolokd/cfg/*.yaml``), sorted."""
    return sorted(path.name for path in SHIPPED_CONFIG_DIR.glob("*.yaml"))


def resolve_config(source: str | Path) -> Path:
    """The experiment YAML that `source` names, as Ultralytics resolves ``yolov8n.yaml``.

    A file that exists at `source` (relative to the working folder, or absolute) is used as it is, so a local or
    edited copy wins. Otherwise a bare name (``bckd_yolov8n.yaml``) or a name under ``cfg/`` (``cfg/bckd_yolov8n.yaml``,
    the README's form) is looked up among the shipped configs, from any folder and after any install.

    Raises:
        FileNotFoundError: naming `source`, with a suggestion and the shipped names when it looked like one.
    """
    path = Path(source)
    if path.is_file():
        return path
    if path.parent in (Path("."), Path("cfg")):
        shipped = SHIPPED_CONFIG_DIR / path.name
        if shipped.is_file():
            return shipped
        names = shipped_configs()
        raise FileNotFoundError(
            f"experiment config not found: {path}{did_you_mean(path.name, names)}. "
            f"Shipped configs (usable by name from any folder): {', '.join(names)}"
        )
    raise FileNotFoundError(f"experiment config not found: {path}")


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a YAML file holds ({} when empty); a ConfigError when it is not YAML or not a mapping."""
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(config, (dict, type(None))):
        raise ConfigError(f"{path}: an experiment is a mapping of keys (model:, data:, teacher:, distill:...)")
    return config or {}


__all__ = ["SHIPPED_CONFIG_DIR", "read_yaml", "resolve_config", "shipped_configs"]
