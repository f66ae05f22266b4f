"""`yolokd demo` end to end at a tiny scale: three trained models, one table, result files."""

import json

import pytest

from yolokd.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_trains_and_reports_three_models(tmp_path):
    """Teacher, baseline and BCKD student are trained and validated; the table and JSON are written."""
    report = run_demo(
        out=str(tmp_path / "demo"), images=16, val_images=8, imgsz=64, epochs=1, teacher_epochs=1, batch=8
    )
    assert [score.role for score in report.scores] == ["teacher", "baseline student", "bckd student"]
    assert all(0.0 <= score.map50_95 <= 1.0 and score.params_m > 0 for score in report.scores)
    saved = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    assert saved["settings"]["epochs"] == 1 and len(saved["scores"]) == 3
    assert "| yolov8s | teacher |" in (tmp_path / "demo" / "demo_results.md").read_text()
