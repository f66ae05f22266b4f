"""The study runner on a micro setting: 1 epoch, 2 methods + Ultralytics' native KD + the placebo, 2 seeds, 64 px."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from yolokd.evaluation.study import run_study

pytestmark = pytest.mark.integration


def test_micro_study_rows_and_cache(synthetic_data, teacher_checkpoint, tmp_path):
    """Every row gets mean/std over 2 seeds and a paired gain; a second call reads all 10 runs from the cache."""
    settings = dict(
        methods="bckd,mimic", seeds="0,1", data=str(synthetic_data), teacher=str(teacher_checkpoint("yolov8s.yaml")),
        out=str(tmp_path / "study"), epochs=1, imgsz=64, batch=8, placebo=True,
    )  # fmt: skip
    report = run_study(**settings)
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    rows = ["baseline", "bckd", "mimic", "ultralytics_native", "placebo"]
    assert [row["row"] for row in saved["rows"]] == rows
    for row in saved["rows"]:
        assert row["map50_95"]["n"] == 2 and row["map50_95"]["std"] is not None and row["map50_95"]["std"] >= 0
        assert (row["gain"] is None) == (row["row"] == "baseline")
    assert len(saved["runs"]) == 10 and saved["teacher"] is not None
    assert {(run["row"], run["seed"]) for run in saved["runs"]} == {(row, seed) for row in rows for seed in (0, 1)}
    text = (tmp_path / "study" / "study.md").read_text()
    assert "| bckd | 2 |" in text and "Noise rule:" in text and (tmp_path / "study" / "study.png").stat().st_size > 0
    assert all(math.isfinite(summary.map50_95.mean) for summary in report.summaries())
    again = run_study(**settings)
    assert again.settings["cached_runs"] == 10
    placebo = json.loads((tmp_path / "study" / "runs" / "seed0" / "placebo" / "kd_balance.json").read_text())
    (method,) = placebo["methods"].values()
    assert method["grad_share"] == 1e-6 and method["measured_share"] * method["scale"] == pytest.approx(1e-6)


def test_parallel_runs_give_the_sequential_results(synthetic_data, teacher_checkpoint, tmp_path):
    """jobs=2 trains two runs at a time in their own processes; every run's score equals the one-at-a-time study's."""
    settings = dict(
        methods="bckd", seeds="0", data=str(synthetic_data), teacher=str(teacher_checkpoint("yolov8s.yaml")),
        epochs=1, imgsz=64, batch=8, native=False,
    )  # fmt: skip
    parallel = run_study(**settings, out=str(tmp_path / "parallel"), jobs=2)
    sequential = run_study(**settings, out=str(tmp_path / "sequential"))
    assert [(s.row, s.seed) for s in parallel.scores] == [("baseline", 0), ("bckd", 0)]
    for a, b in zip(parallel.scores, sequential.scores, strict=True):
        assert (a.row, a.seed, a.map50_95, a.map50, a.coco) == (b.row, b.seed, b.map50_95, b.map50, b.coco)
        weights = [torch.load(Path(s.run_dir) / "weights" / "last.pt", weights_only=False)["model"] for s in (a, b)]
        pairs = zip(weights[0].state_dict().items(), weights[1].state_dict().items(), strict=True)
        assert all(ka == kb and torch.equal(va, vb) for (ka, va), (kb, vb) in pairs), a.row  # trained bit for bit alike
    with pytest.raises(ValueError, match="jobs: expected an integer >= 1"):
        run_study(**settings, out=str(tmp_path / "bad"), jobs=0)
