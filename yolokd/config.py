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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg

from yolokd.config_errors import ConfigError
from yolokd.config_errors import did_you_mean as _did_you_mean  # the name yolokd.engine.tune imports
from yolokd.config_fields import build_dataclass
from yolokd.config_files import SHIPPED_CONFIG_DIR, read_yaml, resolve_config, shipped_configs
from yolokd.config_overrides import apply_overrides, parse_overrides
from yolokd.engine.balance import Balance
from yolokd.engine.schedule import CLOSE_MOSAIC, Schedule
from yolokd.losses import LOSSES, LossParams
from yolokd.quant.backend import is_qat_quantize, modelopt_problem

YOLOKD_KEYS = ("teacher", "distill", "schedule", "balance")
ULTRALYTICS_DISTILL_KEYS = ("distill_model", "dis")


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
        config = read_yaml(path)
    override_map = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    return _build_experiment(apply_overrides(config, override_map), source_path)


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
    schedule = _build_section(Schedule, config, "schedule", "warmup_epochs:, off_last_epochs:")
    balance = _build_section(Balance, config, "balance", "weight_mode:, batches:")
    _check_kd_is_on(schedule, train_args, distill)
    return Experiment(
        train_args=train_args, teacher=teacher, distill=distill, schedule=schedule, balance=balance, source=source
    )


def _build_section(cls: type, config: dict[str, Any], key: str, example_keys: str):
    """The dataclass of an optional top-level mapping (``schedule:``, ``balance:``); its defaults when absent."""
    section = config.get(key) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{key}: expected a mapping ({example_keys}), got {section!r}")
    return build_dataclass(cls, section, key)


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
    params = build_dataclass(LOSSES[name].Params, params_config, path, extra_keys=("loss",), owner=f"loss '{name}'")
    return LossEntry(name=name, params=params)


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


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so ``yaml.safe_dump`` accepts the result."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# ConfigError, Schedule, the overrides and the file lookup live in config_errors, engine.schedule, config_overrides and
# config_files; yolokd's commands, tests and benchmarks import them from here
__all__ = [
    "SHIPPED_CONFIG_DIR",
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
