"""``yolokd tune ... use_ray=true``: the KD search on Ray Tune, through Ultralytics' ``run_ray_tune``.

Ultralytics' Ray integration trains each trial with ``model.train(**config)`` on a YOLO model it puts in Ray's object
store. Here that model is a YOLO whose task trainer is yolokd's distillation trainer for this experiment
(:func:`distillation_model`); each trial's trainer takes the KD keys (``distill.<i>.<field>``) out of the trial's
config and builds the trial's experiment from them, the rest are Ultralytics train arguments as usual. Ray's search
algorithm (default Optuna) and ASHA early stopping (``grace_period`` epochs) are Ultralytics'. Ray is an extra:
``pip install "yolokd[tune]"`` (ray[tune] and optuna); tested on the CPU with 2 trials (tests/integration/test_tune.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ultralytics import YOLO
from ultralytics.cfg import TASK2METRIC
from ultralytics.utils import DEFAULT_CFG, YAML
from ultralytics.utils.plotting import plot_tune_results

from yolokd.config import ConfigError, Experiment
from yolokd.engine.trainer import _trainer_class


def trial_trainer(experiment: Experiment, keys: list[str]) -> type:
    """The experiment's distillation trainer class, taking this trial's KD values from its overrides."""
    from yolokd.engine.tune import experiment_with

    base = _trainer_class(experiment, None)
    kd_keys = [key for key in keys if key.startswith("distill.")]

    class TrialTrainer(base):
        def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
            overrides = dict(overrides or {})
            values = {key: overrides.pop(key) for key in kd_keys if key in overrides}
            super().__init__(experiment_with(experiment, values), overrides=overrides, _callbacks=_callbacks, cfg=cfg)

    return TrialTrainer


def distillation_model(experiment: Experiment, keys: list[str]) -> YOLO:
    """The experiment's student as an Ultralytics YOLO whose ``train`` runs a yolokd trial (see module doc)."""
    trainer = trial_trainer(experiment, keys)

    class DistillationYOLO(YOLO):
        @property
        def task_map(self) -> dict[str, dict[str, Any]]:
            task_map = super().task_map
            return {**task_map, self.task: {**task_map[self.task], "trainer": trainer}}

    return DistillationYOLO(experiment.train_args.get("model", "yolov8n.yaml"))


def tune_with_ray(
    experiment: Experiment,
    space: dict[str, tuple[float, float]],
    *,
    iterations: int,
    name: str,
    grace_period: int = 10,
    gpu_per_trial: int | None = None,
    search_alg: str = "optuna",
) -> Path:
    """Search on Ray Tune; writes the trials as ``tune_results.ndjson`` (Ultralytics' plots) and the best YAML."""
    try:
        from ray import tune
    except ImportError:
        raise ConfigError(
            'use_ray: Ray Tune is not installed; pip install "yolokd[tune]" (or leave use_ray off)'
        ) from None
    from ultralytics.utils.tuner import run_ray_tune

    from yolokd.engine.tune import experiment_with

    model = distillation_model(experiment, list(space))
    ray_space = {
        key: tune.randint(int(low), int(high) + 1)
        if float(low).is_integer() and float(high).is_integer() and isinstance(_default(experiment, key), int)
        else tune.uniform(low, high)
        for key, (low, high) in space.items()
    }
    train_args = {k: v for k, v in experiment.train_args.items() if k != "model"}
    results = run_ray_tune(
        model,
        space=ray_space,
        grace_period=grace_period,
        gpu_per_trial=gpu_per_trial,
        iterations=iterations,
        search_alg=search_alg,
        **{**train_args, "name": name},
    )
    metric = TASK2METRIC[model.task]
    tune_dir = Path(results.experiment_path)
    with open(tune_dir / "tune_results.ndjson", "w", encoding="utf-8") as file:
        for index, result in enumerate(results):
            values = {key: result.config[key] for key in space}
            fitness = float((result.metrics or {}).get(metric, 0.0))
            file.write(json.dumps({"iteration": index + 1, "fitness": fitness, "hyperparameters": values}) + "\n")
    plot_tune_results(str(tune_dir / "tune_results.ndjson"), exclude_zero_fitness_points=False)
    best = results.get_best_result(metric=metric, mode="max")
    values = {key: best.config[key] for key in space}
    stem = Path(experiment.source).stem if experiment.source else "experiment"
    path = tune_dir / f"{stem}_tuned.yaml"
    YAML.save(path, experiment_with(experiment, values).to_dict(), header=f"# yolokd tune (Ray Tune): best {values}\n")
    return path


def _default(experiment: Experiment, key: str) -> Any:
    node: Any = experiment.to_dict()
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node.get(part)
    return node
