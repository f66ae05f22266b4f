"""`yolokd demo` end to end at a tiny scale: three models, one table, result files; the shipped teacher loads."""

import json

import pytest
import torch

from yolokd.data.synthetic import STYLES
from yolokd.demo import EVIDENCE_STUDENT, EVIDENCE_TEACHER, SHIPPED_TEACHER, run_demo
from yolokd.evaluation.study import PRESETS

pytestmark = pytest.mark.integration


def test_demo_trains_and_reports_three_models(tmp_path):
    """A YAML teacher is trained first; baseline and distilled student are trained; table and JSON are written."""
    report = run_demo(
        out=str(tmp_path / "demo"),
        images=16,
        val_images=8,
        imgsz=64,
        epochs=1,
        teacher="yolov8s.yaml",
        teacher_epochs=1,
        batch=8,
        method="bckd",
    )
    roles = [score.role for score in report.scores]
    assert roles == ["teacher (1 epochs)", "baseline student (1 epochs)", "bckd student (1 epochs)"]
    assert all(score.params_m > 0 for score in report.scores)
    assert report.scores[0].params_m > 3 * report.scores[1].params_m  # YOLOv8s teacher, YOLOv8n students
    saved = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    assert saved["settings"]["epochs"] == 1 and len(saved["scores"]) == 3
    assert saved["gain"] == pytest.approx(report.scores[2].map50_95 - report.scores[1].map50_95)
    assert "| yolov8s | teacher (1 epochs) |" in (tmp_path / "demo" / "demo_results.md").read_text()
    assert (tmp_path / "demo" / "student_bckd" / "kd_balance.md").is_file()  # every KD run prints its balance


def test_shipped_teacher_is_a_trained_synthetic_set_detector():
    """The demo's default teacher ships with the package, knows the synthetic classes and is trained, not random."""
    checkpoint = torch.load(SHIPPED_TEACHER, weights_only=False)
    model = checkpoint["model"]
    assert [model.names[i] for i in sorted(model.names)] == list(STYLES["distinct"].classes)  # the demo's scenes
    assert checkpoint["train_metrics"]["metrics/mAP50-95(B)"] > 0.3
    assert sum(p.numel() for p in model.parameters()) > 10e6  # YOLOv8s, 11 M parameters


def test_evidence_pair_is_pretrained():
    """The evidence study's student: a YOLOv8n pretrained on the eight-class upstream scenes, not the benchmark's;
    its teacher: a YOLOv8s fine-tuned from the same upstream set on the benchmark's four classes."""
    checkpoint = torch.load(EVIDENCE_STUDENT, weights_only=False)
    model = checkpoint["model"]
    assert [model.names[i] for i in sorted(model.names)] == list(STYLES["evidence"].classes)  # the upstream classes
    assert checkpoint["train_metrics"]["metrics/mAP50-95(B)"] > 0.3
    assert 2.5e6 < sum(p.numel() for p in model.parameters()) < 4e6  # YOLOv8n
    assert checkpoint.get("optimizer") is None  # shipped stripped
    teacher = torch.load(EVIDENCE_TEACHER, weights_only=False)
    assert [teacher["model"].names[i] for i in sorted(teacher["model"].names)] == list(STYLES["distinct"].classes)
    assert teacher["train_metrics"]["metrics/mAP50-95(B)"] > 0.7
    assert PRESETS["evidence"]["student"] == str(EVIDENCE_STUDENT)
    assert PRESETS["evidence"]["teacher"] == str(EVIDENCE_TEACHER)


def test_demo_with_the_shipped_teacher(tmp_path):
    """The default path: no teacher training, the shipped checkpoint distils a student at any image size."""
    report = run_demo(out=str(tmp_path / "demo"), images=16, val_images=8, imgsz=64, epochs=1, batch=8)
    assert report.scores[0].role == "teacher (shipped with yolokd)" and report.scores[0].train_seconds == 0.0
    assert report.scores[0].model == "yolov8s" and report.scores[2].role == "crosskd student (1 epochs)"
    assert report.scores[0].map50_95 > report.scores[1].map50_95  # a trained teacher vs a 1-epoch student
