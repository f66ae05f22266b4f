"""``yolokd tune CFG.yaml``: search KD weights and method parameters on Ultralytics' own Tuner, or on Ray Tune.

The search space is read from the experiment's methods: each ``distill:`` entry's ``Params`` fields that have a
search range (:meth:`~yolokd.losses.base.LossParams.search_bounds`: field metadata, else default / 4 ... x 4 for term
weights and ``grad_share``, / 2 ... x 2 for temperatures). In ``balance.weight_mode: auto`` (the default) a method's
overall strength is its ``grad_share`` and only the ratio of its term weights matters, so a method with one weighted
term searches ``grad_share`` alone; in ``paper`` mode ``grad_share`` is ignored and the weights are searched, as they
are for a method at its own scale (``grad_share: null``, LD's default). Keys are
the dotted paths of ``yolokd train`` overrides (``distill.0.grad_share``); ``space=`` replaces the default space
with ``{key: [low, high]}`` (a mapping or a YAML file), where a key may also be a numeric Ultralytics train argument.
``methods=bckd,crosskd,pgd`` also searches which methods to use: the experiment gets one entry per candidate (the
cfg's own entry where it has one) and each a gate ``distill.<i>.enabled`` in [0, 1]; a trial trains the methods
whose gate is >= 0.5 (the highest gate's alone if none is), and the best YAML keeps only those. Gates start at 0.6
for the cfg's methods and 0.4 for the others, so the first trial is the cfg and mutation switches methods on and off.

Search: Ultralytics' genetic mutation (``ultralytics.engine.tuner.Tuner._mutate``: its parents, mutation scale and
records, ``tune_results.ndjson``), one yolokd distillation run per iteration; or with ``use_ray=True`` Ray Tune
(Ultralytics' ``run_ray_tune``: its search algorithm and ASHA scheduler across GPUs or machines) with a yolokd
trainer per trial. Fitness: the student's validation mAP50-95 of its best epoch. Output in the tune folder: the
trials' records, Ultralytics' plots of them (``tune_scatter_plots.png``, ``tune_fitness.png``) and
``<cfg>_tuned.yaml``, the experiment with the best values, ready for ``yolokd train`` and ``yolokd check``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml
from ultralytics.cfg import CFG_INT_KEYS, TASK2METRIC, check_cfg
from ultralytics.engine.tuner import Tuner
from ultralytics.utils import DEFAULT_CFG_DICT, LOGGER, YAML, colorstr
from ultralytics.utils.plotting import plot_tune_results

from yolokd.config import ConfigError, Experiment, _did_you_mean, apply_overrides, load_experiment, resolve_config
from yolokd.engine.trainer import _trainer_class, student_task

TUNE_KEYS = ("space", "iterations", "name", "methods", "use_ray", "grace_period", "gpu_per_trial", "search_alg")
SIGNIFICANT_DIGITS = 5  # mutated values are rounded to 5 significant digits (Ultralytics: 5 decimals)
GATE = "enabled"  # distill.<i>.enabled: whether a trial uses method i (searched with methods=)
GATE_ON, GATE_START_ON, GATE_START_OFF = 0.5, 0.6, 0.4


def _gate_index(key: str) -> int | None:
    """i for ``distill.<i>.enabled``, else None."""
    parts = key.split(".")
    is_gate = len(parts) == 3 and parts[0] == "distill" and parts[1].isdigit() and parts[2] == GATE
    return int(parts[1]) if is_gate else None


def with_candidates(experiment: Experiment, methods: Any) -> tuple[Experiment, dict[str, float]]:
    """The experiment with one entry per candidate method, and each candidate's starting gate value.

    The cfg's entry of a method lends its parameters; the cfg's methods start on, the others off (all on is no
    search: the first candidate starts on when the cfg has none of them).
    """
    from yolokd.losses import LOSSES

    names = [str(m).strip() for m in (methods if isinstance(methods, list | tuple) else str(methods).split(","))]
    names = [n for n in names if n]
    for name in names:
        if name not in LOSSES:
            raise ConfigError(f"methods: unknown method {name!r}{_did_you_mean(name, list(LOSSES))}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"methods: give two or more distinct methods to choose from, got {names}")
    configured = {entry["loss"]: entry for entry in experiment.to_dict()["distill"]}
    config = {**experiment.to_dict(), "distill": [configured.get(name, {"loss": name}) for name in names]}
    candidates = load_experiment(config)
    candidates.source = experiment.source
    on = [name in configured for name in names] if any(name in configured for name in names) else [True]
    gates = {
        f"distill.{i}.{GATE}": GATE_START_ON if i < len(on) and on[i] else GATE_START_OFF for i in range(len(names))
    }
    return candidates, gates


def default_space(experiment: Experiment) -> dict[str, tuple[float, float]]:
    """The search space the experiment's methods declare: ``{"distill.<i>.<field>": (low, high)}``."""
    auto = experiment.balance.weight_mode == "auto"
    space = {}
    for index, entry in enumerate(experiment.distill):
        weighted = [f for f in dataclasses.fields(entry.params) if f.name.endswith("weight") and f.default != 0]
        for field in dataclasses.fields(entry.params):
            bounds = type(entry.params).search_bounds(field)
            if bounds is None or (field.name == "grad_share" and (not auto or entry.params.grad_share is None)):
                continue
            if auto and field.name.endswith("weight") and len(weighted) < 2 and entry.params.grad_share is not None:
                continue  # one weighted term: auto balance rescales it, only grad_share sets its strength
            space[f"distill.{index}.{field.name}"] = (float(bounds[0]), float(bounds[1]))
    if not space:
        raise ConfigError("space: the experiment's methods have nothing to search; add methods under 'distill:'")
    return space


def check_space(experiment: Experiment, space: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Validate a user search space ``{key: [low, high]}``; a ConfigError naming the key and the fix otherwise."""
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"space: expected a mapping {{key: [low, high]}}, got {space!r}")
    checked = {}
    for key, bounds in space.items():
        if not (isinstance(bounds, list | tuple) and len(bounds) == 2 and all(_is_number(b) for b in bounds)):
            raise ConfigError(f"space.{key}: expected [low, high] (two numbers), got {bounds!r}")
        low, high = float(bounds[0]), float(bounds[1])
        if low > high:
            raise ConfigError(f"space.{key}: low {bounds[0]} is above high {bounds[1]}")
        for bound in bounds:
            _check_value(experiment, str(key), bound)
        checked[str(key)] = (low, high)
    return checked


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_value(experiment: Experiment, key: str, value: float) -> None:
    """Raise a ConfigError unless `key` names a numeric searchable setting and `value` is in its valid range."""
    parts = key.split(".")
    if parts[0] != "distill":
        numeric = {k for k, v in DEFAULT_CFG_DICT.items() if _is_number(v)}
        if key not in numeric:
            raise ConfigError(
                f"space.{key}: unknown key{_did_you_mean(key, [*default_space(experiment), *numeric])}. Search "
                f"keys: distill.<index>.<field> of a configured method ({', '.join(default_space(experiment))}...), "
                "or a numeric Ultralytics train argument"
            )
        try:
            check_cfg({key: value}, hard=True)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"space.{key}: bound {value} is outside its range: {error}") from None
        return
    if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(experiment.distill):
        raise ConfigError(
            f"space.{key}: expected distill.<index>.<field> with index 0..{len(experiment.distill) - 1} "
            f"(one per configured method)"
        )
    entry = experiment.distill[int(parts[1])]
    fields = {f.name: f for f in dataclasses.fields(entry.params)}
    name = parts[2]
    if name == GATE:
        if not 0 <= value <= 1:
            raise ConfigError(f"space.{key}: a method gate's bounds lie in [0, 1] (on at >= {GATE_ON}), got {value}")
        return
    if name not in fields:
        raise ConfigError(
            f"space.{key}: unknown key for loss '{entry.name}'{_did_you_mean(name, fields)}. "
            f"Valid keys: {', '.join(fields)}"
        )
    default = fields[name].default
    if isinstance(default, bool) or not isinstance(default, int | float | type(None)):
        raise ConfigError(f"space.{key}: '{name}' of loss '{entry.name}' is not a number ({default!r}); not searchable")
    if isinstance(default, int) and not isinstance(default, bool) and value != int(value):
        raise ConfigError(f"space.{key}: '{name}' is an integer; bound {value} is not")
    try:
        dataclasses.replace(entry.params, **{name: value})
    except ValueError as error:
        message = f"space.{key}: bound {value} is outside {name}'s range for loss '{entry.name}': {error}"
        raise ConfigError(message) from None


def read_space(source: str | dict | None) -> dict[str, Any] | None:
    """``space=`` as given: a mapping, a YAML file of one, or None (the default space)."""
    if source is None or isinstance(source, dict):
        return source
    path = Path(str(source))
    if not path.is_file():
        raise FileNotFoundError(f"space: {source} is neither a mapping {{key: [low, high]}} nor a YAML file")
    return yaml.safe_load(path.read_text())


def experiment_with(experiment: Experiment, values: dict[str, float]) -> Experiment:
    """The experiment with each dotted key set (KD parameters and train arguments), validated again.

    With gates (``distill.<i>.enabled``) only the methods whose gate is on stay, re-indexed in order.
    """
    gates = {_gate_index(k): float(v) for k, v in values.items() if _gate_index(k) is not None}
    config = apply_overrides(experiment.to_dict(), {k: v for k, v in values.items() if _gate_index(k) is None})
    if gates:
        kept = [i for i in sorted(gates) if gates[i] >= GATE_ON] or [max(gates, key=lambda i: gates[i])]
        config["distill"] = [entry for i, entry in enumerate(config["distill"]) if i in kept or i not in gates]
    return load_experiment(config)


class DistillationTuner(Tuner):
    """Ultralytics' Tuner (genetic mutation, its records and plots) over an experiment's KD settings.

    Args:
        experiment: the experiment to tune; its values seed the first iteration.
        space: ``{key: (low, high)}`` (:func:`default_space` or :func:`check_space`).
        name: tune folder name, under the experiment's ``project``.
    """

    def __init__(
        self,
        experiment: Experiment,
        space: dict[str, tuple[float, float]],
        name: str = "tune",
        start: dict[str, float] | None = None,
    ) -> None:
        self.experiment = experiment
        self.start = dict(start or {})  # first-trial values of keys the experiment has no value for (gates)
        self.int_keys = {k for k in space if isinstance(self._current(k), int) or k in CFG_INT_KEYS}
        args = {**experiment.train_args, "name": name, "space": dict(space), "mode": "train"}
        super().__init__(args=args, model=str(experiment.train_args.get("model", "")))
        for key in space:  # Ultralytics' mutation seeds from, and fills gaps with, the args' attribute of each key
            setattr(self.args, key, self._current(key))
        self.task = student_task(experiment.train_args.get("model", DEFAULT_CFG_DICT["model"] or "yolov8n.yaml"))

    def _current(self, key: str) -> float:
        """The experiment's value of a search key (gates: their start value, on by default)."""
        if _gate_index(key) is not None:
            return self.start.get(key, GATE_START_ON)
        node: Any = self.experiment.to_dict()
        for part in key.split("."):
            node = node[int(part)] if isinstance(node, list) else node.get(part, DEFAULT_CFG_DICT.get(part))
        return node

    def _constrain(self, hyp: dict[str, float]) -> dict[str, float]:
        """Clip to the bounds; 5 significant digits (KD weights such as MGD's 2e-5 do not survive 5 decimals)."""
        for key, (low, high) in self.space.items():
            value = min(max(hyp[key], low), high)
            hyp[key] = round(value) if key in self.int_keys else float(f"{value:.{SIGNIFICANT_DIGITS}g}")
        return hyp

    def __call__(self, iterations: int = 10, cleanup: bool = False) -> Path:
        """Run the iterations (continuing a tune folder's records); return the path of the best experiment YAML."""
        self.tune_dir.mkdir(parents=True, exist_ok=True)
        start = len(self._load_local_results())
        metric = TASK2METRIC[self.task]
        for iteration in range(start, iterations):
            values = self._mutate()
            LOGGER.info(f"{self.prefix}iteration {iteration + 1}/{iterations}: {values}")
            trial = experiment_with(
                self.experiment, {**values, "project": str(self.tune_dir), "name": f"trial{iteration + 1}"}
            )
            metrics, run_dir = train_trial(trial)
            fitness = float((metrics or {}).get(metric, 0.0))
            failed = None if metrics else ["data"]
            self._save_local_result(
                self._result_record(
                    iteration + 1, fitness, values, {"data": metrics or {}}, {"data": str(run_dir)}, failed
                )
            )
            self.write_best()
        best = self.write_best()
        results = self._load_local_results()
        plot_tune_results(str(self.tune_file), exclude_zero_fitness_points=any(r["fitness"] > 0 for r in results))
        return best

    def write_best(self) -> Path:
        """Write the experiment with the best iteration's values (first best on ties) and return its path."""
        results = self._load_local_results()
        best = max(range(len(results)), key=lambda i: (results[i]["fitness"], -i))
        values = {k: results[best]["hyperparameters"][k] for k in self.space}
        tuned = experiment_with(self.experiment, values)
        stem = Path(self.experiment.source).stem if self.experiment.source else "experiment"
        path = self.tune_dir / f"{stem}_tuned.yaml"
        header = (
            f"# yolokd tune: best of {len(results)} iterations = iteration {best + 1}, "
            f"{TASK2METRIC[self.task]} {results[best]['fitness']}: {values}\n"
        )
        YAML.save(path, tuned.to_dict(), header=header)
        LOGGER.info(f"{self.prefix}best so far: iteration {best + 1}, {values}; saved {colorstr('bold', path)}")
        return path


def train_trial(experiment: Experiment) -> tuple[dict[str, float] | None, Path]:
    """Train one trial; its best epoch's validation metrics (None when it failed) and its run folder."""
    trainer = _trainer_class(experiment, None)(experiment, overrides=dict(experiment.train_args))
    try:
        trainer.train()
    except Exception as error:  # a trial whose values make the run fail scores 0, as Ultralytics' Tuner does
        LOGGER.error(f"yolokd tune: trial {trainer.save_dir.name} failed ({type(error).__name__}: {error})")
        return None, trainer.save_dir
    metrics = getattr(trainer, "metrics", None)
    if not metrics and trainer.best.is_file():  # DDP: the launching process did not validate; the checkpoint did
        from ultralytics.utils.patches import torch_load

        metrics = torch_load(trainer.best, map_location="cpu").get("train_metrics")
    return ({k: float(v) for k, v in metrics.items()} if metrics else None), trainer.save_dir


def tune_experiment(
    source: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    space: str | dict | None = None,
    iterations: int = 10,
    name: str = "tune",
    methods: Any = None,
    use_ray: bool = False,
    **ray_args: Any,
) -> Path:
    """``yolokd tune``: validate the experiment and the search space, search, return the best experiment YAML's path."""
    experiment = load_experiment(resolve_config(source), overrides or {})
    gates: dict[str, float] = {}
    if methods is not None:
        experiment, gates = with_candidates(experiment, methods)
    if not experiment.distill:
        raise ConfigError("distill: the experiment has no methods to tune; add one under 'distill:' or give methods=")
    user_space = read_space(space)
    checked = check_space(experiment, user_space) if user_space is not None else default_space(experiment)
    checked.update({key: (0.0, 1.0) for key in gates if key not in checked})
    if not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"iterations: expected an integer >= 1, got {iterations!r}")
    if use_ray:
        from yolokd.engine.tune_ray import tune_with_ray

        return tune_with_ray(experiment, checked, iterations=iterations, name=name, **ray_args)
    if ray_args:
        raise ConfigError(f"{', '.join(ray_args)}: Ray Tune options; add use_ray=true or remove them")
    return DistillationTuner(experiment, checked, name=name, start=gates)(iterations=iterations)
