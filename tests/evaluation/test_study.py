"""The study runner on a micro setting: 1 epoch, 2 methods + Ultralytics' native KD, 2 seeds, 64-px images."""

from __future__ import annotations

import json
import math

import pytest

from yolokd.evaluation.study import run_study

pytestmark = pytest.mark.integration


def test_micro_study_rows_and_cache(synthetic_data, teacher_checkpoint, tmp_path):
    """Every row gets mean/std over 2 seeds and a paired gain; a second call reads all 8 runs from the cache."""
    settings = dict(
        methods="bckd,mimic", seeds="0,1", data=str(synthetic_data), teacher=str(teacher_checkpoint("yolov8s.yaml")),
        out=str(tmp_path / "study"), epochs=1, imgsz=64, batch=8,
    )  # fmt: skip
    report = run_study(**settings)
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    assert [row["row"] for row in saved["rows"]] == ["baseline", "bckd", "mimic", "ultralytics_native"]
    for row in saved["rows"]:
        assert row["map50_95"]["n"] == 2 and row["map50_95"]["std"] is not None and row["map50_95"]["std"] >= 0
        assert (row["gain"] is None) == (row["row"] == "baseline")
    assert len(saved["runs"]) == 8 and saved["teacher"] is not None
    assert {(run["row"], run["seed"]) for run in saved["runs"]} == {
        (row, seed) for row in ("baseline", "bckd", "mimic", "ultralytics_native") for seed in (0, 1)
    }
    text = (tmp_path / "study" / "study.md").read_text()
    assert "| bckd | 2 |" in text and "Noise rule:" in text and (tmp_path / "study" / "study.png").stat().st_size > 0
    assert all(math.isfinite(summary.map50_95.mean) for summary in report.summaries())
    again = run_study(**settings)
    assert again.settings["cached_runs"] == 8
