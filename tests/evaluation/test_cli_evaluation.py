"""``yolokd val`` / ``compare`` / ``study`` argument handling, in-process, with the heavy functions recorded."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from yolokd.cli import main
from yolokd.evaluation import compare, study, validate


def recorder(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, result: Any) -> list[tuple[tuple, dict]]:
    """Replace ``module.name`` by a recorder with the real signature (the CLI checks keywords against it)."""
    calls: list[tuple[tuple, dict]] = []

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return result

    fake.__signature__ = inspect.signature(getattr(module, name))  # type: ignore[attr-defined]
    monkeypatch.setattr(module, name, fake)
    return calls


class FakeReport:
    def __init__(self) -> None:
        self.settings = {"out": "runs/yolokd_study"}

    def markdown(self) -> str:
        return "| row |"


class FakeComparison:
    def __init__(self) -> None:
        self.files = {"markdown": Path("out/compare.md")}

    def markdown(self) -> str:
        return "| run |"


def test_study_passes_keywords(monkeypatch, capsys):
    """`yolokd study methods=a,b seeds=0,1 epochs=2` calls run_study with those values and prints the table."""
    calls = recorder(monkeypatch, study, "run_study", FakeReport())
    assert main(["study", "methods=bckd,mimic", "seeds=0,1", "epochs=2"]) == 0
    assert calls == [((), {"methods": "bckd,mimic", "seeds": "0,1", "epochs": 2})]
    assert "| row |" in capsys.readouterr().out


def test_study_unknown_key_suggests(monkeypatch, capsys):
    """A misspelt study argument exits with 2 and suggests the right one."""
    recorder(monkeypatch, study, "run_study", FakeReport())
    assert main(["study", "metods=bckd"]) == 2
    assert "did you mean 'methods'" in capsys.readouterr().err


def test_compare_takes_run_folders(monkeypatch, capsys):
    """`yolokd compare A B baseline=C` passes the folders in order and the baseline."""
    calls = recorder(monkeypatch, compare, "compare_runs", FakeComparison())
    assert main(["compare", "runs/a", "runs/b", "baseline=runs/c"]) == 0
    assert calls == [((["runs/a", "runs/b"],), {"baseline": "runs/c"})]
    assert "| run |" in capsys.readouterr().out


def test_compare_without_runs_is_an_error(capsys):
    """`yolokd compare` alone exits with 2 and shows the usage."""
    assert main(["compare"]) == 2
    assert "yolokd compare RUN_DIR" in capsys.readouterr().err


def test_val_routes_to_validate_model(monkeypatch, capsys):
    """`yolokd val model=m.pt data=d.yaml coco=false` calls validate_model with those arguments."""
    result = validate.ValidationResult({"metrics/mAP50-95(B)": 0.5}, None, {"metrics": Path("v/val_metrics.json")})
    calls = recorder(monkeypatch, validate, "validate_model", result)
    assert main(["val", "model=m.pt", "data=d.yaml", "coco=false"]) == 0
    assert calls == [(("m.pt",), {"data": "d.yaml", "coco": False})]
    assert "0.5000" in capsys.readouterr().out
