"""yolokd tune: 2 iterations x 1 epoch on the synthetic set through Ultralytics' Tuner write a best experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_train_args

from yolokd.cli import main
from yolokd.config import load_experiment

pytestmark = pytest.mark.integration


def _tiny_bckd_cfg(synthetic_data, teacher_checkpoint, tmp_path) -> Path:
    """A BCKD experiment of seconds-long epochs, written as tmp_path/bckd_tiny.yaml (runs under tmp_path/runs)."""
    cfg = tmp_path / "bckd_tiny.yaml"
    experiment = {
        **tiny_train_args(synthetic_data, tmp_path / "runs", "run", model="yolov8n.yaml"),
        "teacher": str(teacher_checkpoint("yolov8s.yaml")),
        "distill": [{"loss": "bckd"}],
        "balance": {"batches": 1},
    }
    cfg.write_text(yaml.safe_dump(experiment))
    return cfg


def test_two_iterations_write_a_checked_best_yaml(synthetic_data, teacher_checkpoint, tmp_path, capsys):
    """Two mutated trials are trained and recorded; the tuned YAML holds the best trial's values and passes check."""
    cfg = _tiny_bckd_cfg(synthetic_data, teacher_checkpoint, tmp_path)
    space = "space={distill.0.grad_share: [0.5, 2.0], distill.0.loc_weight: [2, 8]}"
    assert main(["tune", str(cfg), "iterations=2", space]) == 0
    tune_dir = tmp_path / "runs" / "tune"
    records = [json.loads(line) for line in (tune_dir / "tune_results.ndjson").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2]
    assert records[0]["hyperparameters"] == {"distill.0.grad_share": 1.0, "distill.0.loc_weight": 4.0}  # the cfg's
    assert records[1]["hyperparameters"] != records[0]["hyperparameters"]  # mutated
    assert all("metrics/mAP50-95(B)" in r["datasets"]["data"] for r in records)  # every trial trained and validated
    assert (tune_dir / "tune_fitness.png").is_file() and (tune_dir / "tune_scatter_plots.png").is_file()
    best_index = max(range(2), key=lambda i: (records[i]["fitness"], -i))
    best = load_experiment(tune_dir / "bckd_tiny_tuned.yaml")
    values = records[best_index]["hyperparameters"]
    assert best.distill[0].params.grad_share == values["distill.0.grad_share"]
    assert best.distill[0].params.loc_weight == values["distill.0.loc_weight"]
    assert best.train_args["name"] == "run"  # the original experiment, not a trial's folder
    capsys.readouterr()
    assert main(["check", str(tune_dir / "bckd_tiny_tuned.yaml")]) == 0


def test_method_search_trains_and_keeps_the_gated_methods(synthetic_data, teacher_checkpoint, tmp_path, capsys):
    """methods=: the first trial is the cfg's method alone; the best YAML keeps the methods its gates turned on."""
    cfg = _tiny_bckd_cfg(synthetic_data, teacher_checkpoint, tmp_path)
    assert main(["tune", str(cfg), "iterations=2", "methods=bckd,mimic"]) == 0
    tune_dir = tmp_path / "runs" / "tune"
    records = [json.loads(line) for line in (tune_dir / "tune_results.ndjson").read_text().splitlines()]
    first = records[0]["hyperparameters"]
    assert first["distill.0.enabled"] == 0.6 and first["distill.1.enabled"] == 0.4  # bckd on, mimic off
    first_balance = (tune_dir / "trial1" / "kd_balance.md").read_text()  # what the first trial distilled with
    assert "bckd" in first_balance and "mimic" not in first_balance
    best_index = max(range(2), key=lambda i: (records[i]["fitness"], -i))
    gates = [records[best_index]["hyperparameters"][f"distill.{i}.enabled"] for i in range(2)]
    expected = [name for name, gate in zip(["bckd", "mimic"], gates, strict=True) if gate >= 0.5] or [
        ["bckd", "mimic"][max(range(2), key=lambda i: gates[i])]
    ]
    best = load_experiment(tune_dir / "bckd_tiny_tuned.yaml")
    assert [entry.name for entry in best.distill] == expected
    capsys.readouterr()
    assert main(["check", str(tune_dir / "bckd_tiny_tuned.yaml")]) == 0


def test_ray_trial_trainer_takes_kd_values_from_the_trial_config(synthetic_data, teacher_checkpoint, tmp_path):
    """What Ray Tune runs per trial (run_ray_tune's model.train(**config)) distils with the trial's KD values."""
    from yolokd.engine.tune_ray import distillation_model

    train_args = tiny_train_args(synthetic_data, tmp_path, "trial", model="yolov8n.yaml")
    experiment = load_experiment(
        {**train_args, "teacher": str(teacher_checkpoint("yolov8s.yaml")), "distill": [{"loss": "bckd"}]}
    )
    model = distillation_model(experiment, ["distill.0.loc_weight", "lr0"])
    metrics = model.train(**{k: v for k, v in train_args.items() if k != "model"}, **{"distill.0.loc_weight": 2.5})
    assert type(model.trainer).__name__ == "TrialTrainer" and model.trainer.distiller is not None
    assert model.trainer.experiment.distill[0].params.loc_weight == 2.5
    assert "metrics/mAP50-95(B)" in metrics.results_dict


def test_ray_tune_trains_each_trial_with_its_values_and_writes_a_checked_best_yaml(
    synthetic_data, teacher_checkpoint, tmp_path, capsys
):
    """use_ray=true, 2 trials x 1 epoch on Ray Tune (Ultralytics' run_ray_tune, Optuna + ASHA): each trial distils
    with the values Ray drew for it, the trials are recorded, and the best trial's values make a YAML check accepts."""
    cfg = _tiny_bckd_cfg(synthetic_data, teacher_checkpoint, tmp_path)
    space = "space={distill.0.grad_share: [0.5, 2.0], distill.0.loc_weight: [2, 8]}"
    assert main(["tune", str(cfg), "use_ray=true", "iterations=2", "grace_period=1", "name=raytune", space]) == 0
    tune_dir = tmp_path / "runs" / "raytune"
    records = [json.loads(line) for line in (tune_dir / "tune_results.ndjson").read_text().splitlines()]
    assert len(records) == 2 and records[0]["hyperparameters"] != records[1]["hyperparameters"]
    for record in records:
        values = record["hyperparameters"]
        assert 0.5 <= values["distill.0.grad_share"] <= 2.0 and 2 <= values["distill.0.loc_weight"] <= 8
    trials = sorted(path for path in (tmp_path / "runs").iterdir() if path.name.startswith("raytune_"))
    assert len(trials) == 2
    distilled = {}
    for trial in trials:  # each trial's own run folder: the experiment it trained with and its KD terms
        (entry,) = yaml.safe_load((trial / "distill.yaml").read_text())["distill"]
        distilled[(entry["grad_share"], entry["loc_weight"])] = trial
        header = (trial / "results.csv").read_text().splitlines()[0]
        assert "train/bckd_cls" in header and "val/bckd_loc" in header
    drawn = [
        (r["hyperparameters"]["distill.0.grad_share"], r["hyperparameters"]["distill.0.loc_weight"]) for r in records
    ]
    assert set(distilled) == set(drawn)  # the values Ray drew are the values each trial distilled with
    top = max(r["fitness"] for r in records)  # 1-epoch trials can tie (Ray then picks one of them)
    best = load_experiment(tune_dir / "bckd_tiny_tuned.yaml")
    best_values = (best.distill[0].params.grad_share, best.distill[0].params.loc_weight)
    assert best_values in {values for values, r in zip(drawn, records, strict=True) if r["fitness"] == top}
    capsys.readouterr()
    assert main(["check", str(tune_dir / "bckd_tiny_tuned.yaml")]) == 0
