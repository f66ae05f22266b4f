"""``yolokd qat``: the QAT schedule over the experiment, command-line overrides win, bad students are refused."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from yolokd.cli import main
from yolokd.config import ConfigError, load_experiment
from yolokd.quant.qat import QAT_SCHEDULE, qat_experiment

CONFIG = {
    "model": "yolov8n.yaml",
    "data": "coco8.yaml",
    "epochs": 300,
    "lr0": 0.01,
    "warmup_epochs": 3,
    "name": "bckd",
    "teacher": "teacher.pt",
    "distill": [{"loss": "bckd"}],
    "schedule": {"warmup_epochs": 2, "off_last_epochs": "close_mosaic"},
}


@pytest.fixture(autouse=True)
def modelopt_installed(monkeypatch):
    """Config validation sees ModelOpt installed, whatever this machine has (its absence has its own test)."""
    monkeypatch.setattr("yolokd.config.modelopt_problem", lambda: None)


@pytest.fixture
def student(tmp_path) -> Path:
    """A float checkpoint file (contents beyond the missing 'modelopt' state are not read)."""
    path = tmp_path / "best.pt"
    torch.save({"model": None, "train_args": {}}, path)
    return path


def test_qat_schedule_replaces_the_float_training_schedule(student):
    """quantize=8, 3 epochs, AdamW 1e-4, no warm-up or mosaic, KD at full weight throughout, name <name>_qat."""
    experiment = qat_experiment(CONFIG, {"model": str(student)})
    assert {key: experiment.train_args[key] for key in QAT_SCHEDULE} == QAT_SCHEDULE
    assert experiment.train_args["model"] == str(student) and experiment.train_args["name"] == "bckd_qat"
    assert (experiment.schedule.warmup_epochs, experiment.schedule.off_last_epochs) == (0, 0)
    assert experiment.teacher == "teacher.pt" and [entry.name for entry in experiment.distill] == ["bckd"]


def test_command_line_overrides_win_over_the_qat_schedule(student):
    """epochs=5 lr0=5e-5 name=mine schedule.warmup_epochs=1 on the command line are kept."""
    overrides = {"model": str(student), "epochs": 5, "lr0": 5e-5, "name": "mine", "schedule.warmup_epochs": 1}
    experiment = qat_experiment(CONFIG, overrides)
    assert (experiment.train_args["epochs"], experiment.train_args["lr0"], experiment.train_args["name"]) == (
        5,
        5e-5,
        "mine",
    )
    assert experiment.schedule.warmup_epochs == 1 and experiment.train_args["quantize"] == 8


def test_gdetkd_head_transfer_is_switched_off(student):
    """G-DetKD's init_head_from_teacher would overwrite the trained student's head: QAT turns it off."""
    config = {**CONFIG, "distill": [{"loss": "bckd"}, {"loss": "gdetkd", "init_head_from_teacher": True}]}
    assert load_experiment(config).distill[1].params.init_head_from_teacher
    assert not qat_experiment(config, {"model": str(student)}).distill[1].params.init_head_from_teacher


@pytest.mark.parametrize(
    ("model", "error", "message"),
    [
        (None, ValueError, "fine-tunes a trained student; give its checkpoint"),
        ("yolov8n.yaml", ValueError, "is not a checkpoint"),
        ("missing/best.pt", FileNotFoundError, "does not exist"),
    ],
)
def test_a_student_that_is_not_a_trained_checkpoint_is_refused(model, error, message):
    """QAT needs trained float weights: no model=, a YAML or a missing file are one-line errors."""
    with pytest.raises(error, match=message):
        qat_experiment(CONFIG, {"model": model} if model else {})


def test_a_qat_checkpoint_is_refused_with_the_resume_command(tmp_path):
    """Quantizing an already quantization-aware trained student again is refused; the message says how to continue."""
    path = tmp_path / "qat.pt"
    torch.save({"model": None, "modelopt": {"modelopt": [], "ranges": {}}}, path)
    with pytest.raises(ValueError, match="already quantization-aware trained; continue its run with 'yolokd train"):
        qat_experiment(CONFIG, {"model": str(path)})


def test_quantize_8_without_modelopt_is_a_config_error(monkeypatch):
    """quantize: 8 in a config on a machine without ModelOpt fails when loaded, naming the install."""
    monkeypatch.setattr("yolokd.config.modelopt_problem", lambda: "NVIDIA ModelOpt (...): pip install 'yolokd[int8]'")
    with pytest.raises(ConfigError, match=r"^quantize: 8 \(INT8 quantization-aware training\) needs NVIDIA ModelOpt"):
        load_experiment({**CONFIG, "quantize": 8})
    assert load_experiment({**CONFIG, "quantize": 16}).train_args["quantize"] == 16  # not QAT: no ModelOpt needed


@pytest.fixture
def train_calls(monkeypatch) -> list:
    """Replace the trainer module with a recorder of train_experiment(experiment, resume) calls."""
    calls: list = []
    fake = types.ModuleType("yolokd.engine.trainer")
    fake.train_experiment = lambda experiment, resume=None: calls.append((experiment, resume)) or Path("runs/x")
    monkeypatch.setitem(sys.modules, "yolokd.engine.trainer", fake)
    return calls


def test_cli_qat_trains_the_qat_experiment(tmp_path, student, train_calls, capsys):
    """`yolokd qat CFG.yaml model=best.pt epochs=2` trains once with quantize=8 and prints the export command."""
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    assert main(["qat", str(config), f"model={student}", "epochs=2"]) == 0
    (experiment, resume), *rest = train_calls
    assert not rest and resume is None
    assert (experiment.train_args["quantize"], experiment.train_args["epochs"]) == (8, 2)
    assert "yolokd export model=runs/x/weights/best.pt format=onnx" in capsys.readouterr().out


def test_cli_qat_resume_is_a_train_resume(train_calls):
    """`yolokd qat resume=last.pt` continues the run with its saved experiment, as `yolokd train resume=` does."""
    assert main(["qat", "resume=runs/x/weights/last.pt"]) == 0
    assert train_calls == [(None, "runs/x/weights/last.pt")]


def test_cli_qat_without_a_config_is_one_line(capsys):
    """No config file: exit code 2 and one line saying the usage."""
    assert main(["qat", "model=best.pt"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'qat' takes one config file: yolokd qat CFG.yaml model=best.pt" in error
