"""Tests for the ``yolokd`` command line, run in-process (no training)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from yolokd.cli import main, normalize_args

CONFIG = {
    "model": "yolov8n.yaml",
    "data": "coco8.yaml",
    "epochs": 10,
    "teacher": "teacher.pt",
    "distill": [{"loss": "bckd", "cls_weight": 1.0}],
}


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A valid experiment YAML in a temporary folder."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Replace the trainer module with a recorder of train_experiment(experiment, resume) calls."""
    calls: list[tuple[Any, Any]] = []
    fake = types.ModuleType("yolokd.engine.trainer")
    fake.train_experiment = lambda experiment, resume=None: calls.append((experiment, resume)) or Path("runs/x")
    monkeypatch.setitem(sys.modules, "yolokd.engine.trainer", fake)
    return calls


def test_top_help_explains_config_and_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    """`yolokd --help` lists the commands, the yolokd config keys, nested overrides and resume."""
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for expected in (
        "train",
        "methods",
        "check",
        "teacher:",
        "distill:",
        "schedule:",
        "distill.0.cls_weight=2",
        "--epochs 3",
        "resume=",
    ):
        assert expected in text


def test_command_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`yolokd train -h` explains the train usage, the config format and resume."""
    assert main(["train", "-h"]) == 0
    text = capsys.readouterr().out
    assert "yolokd train CFG.yaml" in text and "teacher:" in text and "resume=" in text


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Running `yolokd` alone prints the top-level help."""
    assert main([]) == 0
    assert "Commands:" in capsys.readouterr().out


def test_methods_lists_bckd_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    """`yolokd methods` lists bckd with its parameters, defaults and descriptions."""
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    assert "bckd" in text
    cls_line = next(line for line in text.splitlines() if line.strip().startswith("cls_weight"))
    loc_line = next(line for line in text.splitlines() if line.strip().startswith("loc_weight"))
    assert "1.0" in cls_line and "classification" in cls_line
    assert "4.0" in loc_line and "localisation" in loc_line


def test_check_prints_resolved_experiment(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`yolokd check` prints the experiment as YAML with defaults filled in and overrides applied."""
    assert main(["check", str(config_path), "epochs=3", "distill.0.loc_weight=2"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["epochs"] == 3
    assert resolved["distill"] == [
        {
            "loss": "bckd",
            "branch": "one2many",
            "grad_share": 1.0,
            "layer_share": None,
            "cls_weight": 1.0,
            "loc_weight": 2.0,
        }
    ]
    assert resolved["schedule"] == {"warmup_epochs": 0.0, "off_last_epochs": 0, "follow_o2m_decay": True}
    assert resolved["balance"] == {"weight_mode": "auto", "batches": 4, "start_epoch": 0.0, "every_epoch": True}


def test_bad_key_is_a_clean_error(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt key exits with 2 and a one-line error with the suggestion, no traceback."""
    assert main(["check", str(config_path), "distill.0.cls_wieght=2"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("yolokd: error: distill.0.cls_wieght:")
    assert "did you mean 'cls_weight'?" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert len(captured.err.strip().splitlines()) == 1


def test_missing_config_file_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config path that does not exist exits with 2 and names the file."""
    assert main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_unknown_command_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command exits with 2 and suggests the closest one."""
    assert main(["trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err


def test_dash_dash_key_value_aliases(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--key value` and `--key=value` work like key=value."""
    assert main(["check", str(config_path), "--epochs", "4", "--distill.0.cls_weight=3"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["epochs"] == 4 and resolved["distill"][0]["cls_weight"] == 3.0


def test_normalize_args_forms() -> None:
    """Bare flags become true, dashes in keys become underscores, key=value and paths pass through."""
    args = ["cfg.yaml", "--amp", "--num-train", "5", "--name=a/b", "epochs=3"]
    assert normalize_args(args) == ["cfg.yaml", "amp=true", "num_train=5", "name=a/b", "epochs=3"]


def test_train_passes_experiment(config_path: Path, train_calls: list, capsys: pytest.CaptureFixture[str]) -> None:
    """`yolokd train CFG key=value` loads the experiment with overrides and trains it without resume."""
    assert main(["train", str(config_path), "epochs=2"]) == 0
    ((experiment, resume),) = train_calls
    assert experiment.train_args["epochs"] == 2 and resume is None


def test_train_resume_path_without_config(train_calls: list) -> None:
    """`yolokd train resume=last.pt` resumes from the checkpoint with no experiment."""
    assert main(["train", "resume=runs/x/weights/last.pt"]) == 0
    assert train_calls == [(None, "runs/x/weights/last.pt")]


def test_train_resume_true_with_config(config_path: Path, train_calls: list) -> None:
    """`yolokd train CFG resume=True` passes the experiment and resume=True."""
    assert main(["train", str(config_path), "resume=True"]) == 0
    ((experiment, resume),) = train_calls
    assert experiment.teacher == "teacher.pt" and resume is True


def test_train_without_config_is_an_error(train_calls: list, capsys: pytest.CaptureFixture[str]) -> None:
    """`yolokd train` with neither a config nor resume=PATH exits with 2 and the usage."""
    assert main(["train", "epochs=3"]) == 2
    assert "yolokd train CFG.yaml" in capsys.readouterr().err and train_calls == []


@pytest.mark.parametrize("command", ["val", "export"])
def test_missing_data_path_is_refused_before_anything_runs(command, tmp_path, monkeypatch, capsys) -> None:
    """val/export with a data= path that does not exist: one 'data:' line (exit 2) before the model is loaded or an
    export written."""
    monkeypatch.setitem(sys.modules, "yolokd.export.exporter", None)  # importing the exporter would fail the test
    model = tmp_path / "best.pt"
    model.write_bytes(b"not read")
    assert main([command, f"model={model}", f"data={tmp_path / 'nowhere' / 'data.yaml'}"]) == 2
    err = capsys.readouterr().err
    assert err == f"yolokd: error: data: '{tmp_path / 'nowhere' / 'data.yaml'}' does not exist\n"
    assert list(tmp_path.iterdir()) == [model]


def test_train_without_methods_says_the_student_trains_alone(tmp_path, train_calls, capsys) -> None:
    """A config with no distill methods (and so no teacher) trains, and says it is plain training."""
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump({"model": "yolov8n.yaml", "data": "coco8.yaml", "distill": []}))
    assert main(["train", str(path)]) == 0
    assert "no distill methods (and no teacher): the student trains alone" in capsys.readouterr().out
    assert len(train_calls) == 1 and train_calls[0][0].distill == []
