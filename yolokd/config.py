"""Experiment configs: Ultralytics train arguments plus a teacher, a list of distillation methods and a KD schedule.

An experiment YAML (``cfg/*.yaml``; the shipped ones live in ``yolokd/cfg/``, which the repository's ``cfg/``
links to, and are found by name from any folder: ``bckd_yolov8n.yaml`` or ``cfg/bckd_yolov8n.yaml``)::

    model: yolov8n.yaml          # student; this and any other Ultralytics train argument (data, epochs...)
    teacher: yolov8s.pt          # trained checkpoint; required when distill is non-empty
    distill:                     # methods, each {loss: <name in yolokd.losses.LOSSES>, <its Params fields>}
      - loss: bckd
        cls_weight: 1.0
    schedule: {warmup_epochs: 0, off_last_epochs: 0}   # optional; off_last_epochs may be "close_mosaic"
    balance: {weight_mode: auto, batches: 4, every_epoch: true}  # optional; auto = gradient-share rule (re-measured
                                                                 # each epoch), paper = the weights as written
    quantize: 8                  # optional Ultralytics key: INT8 quantization-aware training (``yolokd qat``)

Everything is checked when loaded: unknown keys (with a "did you mean"), value types against each loss's
``Params`` dataclass, value ranges (its ``__post_init__``), the teacher and duplicate methods. Every error is a
:class:`ConfigError` whose message starts with the dotted path of the bad key.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg
from ultralytics.utils import LOGGER

from yolokd.engine.balance import Balance
from yolokd.losses import LOSSES, LossParams
from yolokd.quant.backend import is_qat_quantize, modelopt_problem

YOLOKD_KEYS = ("teacher", "distill", "schedule", "balance")
SHIPPED_CONFIG_DIR = Path(__file__).resolve().parent / "cfg"  # package data: travels with every install
CLOSE_MOSAIC = "close_mosaic"
ULTRALYTICS_DISTILL_KEYS = ("distill_model", "dis")


class ConfigError(ValueError):
    """An invalid experiment config; the message names the key by its dotted path and says how to fix it."""


@dataclass
class Schedule:
    """When the KD terms are on and how strongly: one multiplier applied to every method's terms.

    Attributes:
        warmup_epochs: the KD weight ramps linearly from 0 to 1 over this many epochs (0 = full weight at once).
        off_last_epochs: KD is off for the last N epochs; ``close_mosaic`` follows Ultralytics' close_mosaic.
        follow_o2m_decay: on one2many/one2one heads (YOLOv10, YOLO26) Ultralytics decays the one2many loss weight
            from 0.8 to 0.1 over training; KD terms on the one2many branch are multiplied by the same decay
            (current / initial weight), so their share of that branch's loss stays what the balance set.
    """

    warmup_epochs: float = 0.0
    off_last_epochs: int | str = 0
    follow_o2m_decay: bool = True

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be >= 0")
        off = self.off_last_epochs
        if off != CLOSE_MOSAIC and (isinstance(off, str) or off < 0):
            raise ValueError(f"off_last_epochs={off!r} must be an integer >= 0 or '{CLOSE_MOSAIC}'")

    def off_epochs(self, close_mosaic: int) -> int:
        """Number of final epochs without KD."""
        return close_mosaic if self.off_last_epochs == CLOSE_MOSAIC else int(self.off_last_epochs)

    def factor(self, progress: float, total_epochs: int, close_mosaic: int) -> float:
        """KD weight multiplier at `progress` epochs elapsed (float; 0.5 = half-way through the first epoch)."""
        off = self.off_epochs(close_mosaic)
        if off > 0 and progress >= total_epochs - off:
            return 0.0
        if self.warmup_epochs == 0:
            return 1.0
        return min(1.0, progress / self.warmup_epochs)


@dataclass
class LossEntry:
    """One configured distillation method: its registry name and validated parameters."""

    name: str
    params: LossParams


@dataclass
class Experiment:
    """A validated experiment: Ultralytics train arguments, the teacher checkpoint, the methods and the schedule."""

    train_args: dict[str, Any]
    teacher: str | None
    distill: list[LossEntry]
    schedule: Schedule
    balance: Balance = field(default_factory=Balance)
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able dict with every method parameter spelled out; ``load_experiment`` reads it back."""
        config = copy.deepcopy(self.train_args)
        if self.teacher is not None:
            config["teacher"] = self.teacher
        config["distill"] = [{"loss": entry.name, **_plain(asdict(entry.params))} for entry in self.distill]
        config["schedule"] = _plain(asdict(self.schedule))
        config["balance"] = _plain(asdict(self.balance))
        return config


def load_experiment(
    source: str | Path | Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any] = ()
) -> Experiment:
    """Read an experiment from a YAML path (or a dict), apply ``key=value`` overrides, then validate it all."""
    source_path = None
    if isinstance(source, Mapping):
        config = copy.deepcopy(dict(source))
    else:
        path = resolve_config(source)
        source_path = str(path)
        config = _read_yaml(path)
    override_map = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    return _build_experiment(apply_overrides(config, override_map), source_path)


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
            f"experiment config not found: {path}{_did_you_mean(path.name, names)}. "
            f"Shipped configs (usable by name from any folder): {', '.join(names)}"
        )
    raise FileNotFoundError(f"experiment config not found: {path}")


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


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(config, (dict, type(None))):
        raise ConfigError(f"{path}: an experiment is a mapping of keys (model:, data:, teacher:, distill:...)")
    return config or {}


def _build_experiment(config: dict[str, Any], source: str | None) -> Experiment:
    _check_top_level_keys(config)
    train_args = {key: value for key, value in config.items() if key not in YOLOKD_KEYS}
    for key, value in train_args.items():
        try:
            check_cfg({key: copy.deepcopy(value)}, hard=True)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{key}: {error}") from None
    if is_qat_quantize(train_args.get("quantize")) and modelopt_problem():  # Ultralytics would pip-install it mid-run
        raise ConfigError(
            f"quantize: {train_args['quantize']} (INT8 quantization-aware training) needs {modelopt_problem()}"
        )
    distill = _build_distill(config.get("distill"))
    teacher = _check_teacher(config.get("teacher"), distill)
    schedule_config = config.get("schedule") or {}
    if not isinstance(schedule_config, dict):
        raise ConfigError(f"schedule: expected a mapping (warmup_epochs:, off_last_epochs:), got {schedule_config!r}")
    schedule = _build_dataclass(Schedule, schedule_config, "schedule")
    balance_config = config.get("balance") or {}
    if not isinstance(balance_config, dict):
        raise ConfigError(f"balance: expected a mapping (weight_mode:, batches:), got {balance_config!r}")
    balance = _build_dataclass(Balance, balance_config, "balance")
    _check_kd_is_on(schedule, train_args, distill)
    return Experiment(
        train_args=train_args, teacher=teacher, distill=distill, schedule=schedule, balance=balance, source=source
    )


def _check_top_level_keys(config: dict[str, Any]) -> None:
    ultralytics_keys = [name for name in DEFAULT_CFG_DICT if name not in ULTRALYTICS_DISTILL_KEYS]
    for key in config:
        if key in ULTRALYTICS_DISTILL_KEYS:
            raise ConfigError(
                f"{key}: Ultralytics' own distillation keys (distill_model, dis) drive its built-in single-method "
                "distillation and change its trainer's behaviour; yolokd does not use them. Put the teacher "
                "checkpoint in 'teacher:' and the methods in 'distill:'"
            )
        if key in YOLOKD_KEYS or key in DEFAULT_CFG_DICT:
            continue
        close = difflib.get_close_matches(str(key), ultralytics_keys, n=5)
        close_text = f" (close matches: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"{key}: unknown key{_did_you_mean(key, [*YOLOKD_KEYS, *ultralytics_keys])}. Valid top-level keys: "
            f"{', '.join(YOLOKD_KEYS)}, or any Ultralytics train argument{close_text}"
        )


def _build_distill(distill_config: Any) -> list[LossEntry]:
    if distill_config is None:
        return []
    if not isinstance(distill_config, list):
        raise ConfigError(f"distill: expected a list of methods, e.g. [{{loss: bckd}}], got {distill_config!r}")
    entries, seen = [], {}
    for index, entry_config in enumerate(distill_config):
        entry = _build_entry(entry_config, f"distill.{index}")
        key = (entry.name, entry.params.branch)
        if key in seen:
            raise ConfigError(
                f"distill.{index}: same loss '{entry.name}' on the same branch '{entry.params.branch}' as "
                f"distill.{seen[key]}, so both would log the same terms; merge them into one entry"
            )
        seen[key] = index
        entries.append(entry)
    return entries


def _build_entry(entry_config: Any, path: str) -> LossEntry:
    if not isinstance(entry_config, dict) or "loss" not in entry_config:
        raise ConfigError(f"{path}: expected a mapping with a 'loss:' key, e.g. {{loss: bckd}}, got {entry_config!r}")
    name = entry_config["loss"]
    if not isinstance(name, str) or name not in LOSSES:
        suggestion = _did_you_mean(name, LOSSES)
        raise ConfigError(f"{path}.loss: unknown loss {name!r}{suggestion}. Valid losses: {', '.join(LOSSES)}")
    params_config = {key: value for key, value in entry_config.items() if key != "loss"}
    params = _build_dataclass(LOSSES[name].Params, params_config, path, extra_keys=("loss",), owner=f"loss '{name}'")
    return LossEntry(name=name, params=params)


def _build_dataclass(cls: type, config: dict[str, Any], path: str, extra_keys: Sequence[str] = (), owner: str = ""):
    """Instantiate a parameters dataclass from `config`: unknown keys, types and ranges become ConfigErrors."""
    config = _renamed_keys(config, dict(getattr(cls, "renamed_fields", ())), path)
    names = [field.name for field in fields(cls)]
    for key in config:
        if key not in names:
            where = f" for {owner}" if owner else ""
            valid = ", ".join([*extra_keys, *names])
            raise ConfigError(f"{path}.{key}: unknown key{where}{_did_you_mean(key, names)}. Valid keys: {valid}")
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


def _check_teacher(teacher: Any, distill: list[LossEntry]) -> str | None:
    if teacher is None:
        if distill:
            raise ConfigError("teacher: required when 'distill' lists methods; set teacher: path/to/trained.pt")
        return None
    if not distill:
        raise ConfigError(
            f"distill: no methods, so the teacher {teacher!r} would be loaded for nothing and the student trained "
            "without distillation; list a method (e.g. distill: [{loss: bckd}]), or set teacher=null to train the "
            "student alone"
        )
    if not isinstance(teacher, str):
        raise ConfigError(f"teacher: expected a checkpoint path (a string ending in .pt), got {teacher!r}")
    suffix = Path(teacher).suffix.lower()
    if suffix in (".yaml", ".yml"):
        raise ConfigError(
            f"teacher: {teacher!r} is a model YAML, which would build a teacher with random weights; "
            "give a trained checkpoint (.pt)"
        )
    if suffix != ".pt":
        raise ConfigError(f"teacher: {teacher!r} must be a trained checkpoint ending in .pt")
    return teacher


def _check_kd_is_on(schedule: Schedule, train_args: dict[str, Any], distill: list[LossEntry]) -> None:
    epochs = train_args.get("epochs", DEFAULT_CFG_DICT["epochs"])
    off = schedule.off_epochs(train_args.get("close_mosaic", DEFAULT_CFG_DICT["close_mosaic"]))
    if distill and off > 0 and off >= epochs:
        raise ConfigError(
            f"schedule.off_last_epochs: KD would be off for the whole run (off for the last {off} of {epochs} "
            f"epochs); lower off_last_epochs (or close_mosaic when it is '{CLOSE_MOSAIC}') or raise epochs"
        )


def _did_you_mean(key: Any, candidates: Sequence[str] | Mapping[str, Any]) -> str:
    matches = difflib.get_close_matches(str(key), list(candidates), n=1)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so ``yaml.safe_dump`` accepts the result."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


__all__ = [
    "ConfigError",
    "Experiment",
    "LossEntry",
    "Schedule",
    "apply_overrides",
    "load_experiment",
    "parse_overrides",
    "resolve_config",
    "shipped_configs",
]
