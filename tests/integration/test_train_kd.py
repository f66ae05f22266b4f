"""1-epoch distillation runs on the synthetic set: every KD term logged, clean student checkpoints."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_train_args
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel

from yolokd.config import load_experiment
from yolokd.engine.trainer import train_experiment

pytestmark = pytest.mark.integration

PAIRS = [
    ("yolov8n.yaml", "yolov8s.yaml"),
    ("yolo11n.yaml", "yolo11s.yaml"),
    ("yolo26n.yaml", "yolo26s.yaml"),
    ("yolov8n.yaml", "yolo11s.yaml"),  # cross-family: YOLO11 teacher, YOLOv8 student
]


def read_results(run_dir: Path) -> list[dict[str, float]]:
    """results.csv rows as floats, keys stripped."""
    with open(run_dir / "results.csv") as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def count_labels(data_yaml: Path, split: str) -> int:
    """GT boxes in one split of a YOLO-format dataset (one label row per box)."""
    root = Path(yaml.safe_load(data_yaml.read_text())["path"])
    return sum(len(path.read_text().splitlines()) for path in (root / "labels" / split).glob("*.txt"))


def assert_plain_student(checkpoint: Path, student_yaml: str, nc: int) -> None:
    """The checkpoint holds the student only: same state-dict keys as a fresh student, no KD entries."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert not {"distill", "teacher", "kd_state"} & set(ckpt)
    model = ckpt.get("ema") or ckpt["model"]  # Ultralytics moves the EMA to "model" when it strips the optimiser
    assert set(model.state_dict()) == set(DetectionModel(student_yaml, nc=nc, verbose=False).state_dict())
    assert getattr(model, "criterion", None) is None
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(("student", "teacher"), PAIRS, ids=[f"{s[:-5]}-from-{t[:-5]}" for s, t in PAIRS])
def test_one_epoch_bckd(student, teacher, synthetic_data, synthetic_names, teacher_checkpoint, tmp_path):
    """BCKD for one epoch: finite non-zero train/val KD terms; best.pt is a plain student that YOLO validates."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model=student),
            "teacher": str(teacher_checkpoint(teacher)),
            "distill": [{"loss": "bckd"}],
        }
    )
    run_dir = train_experiment(experiment)
    (row,) = read_results(run_dir)
    for column in ("train/bckd_cls", "train/bckd_loc", "val/bckd_cls", "val/bckd_loc"):
        assert math.isfinite(row[column]) and row[column] > 0, column
    best = run_dir / "weights" / "best.pt"
    assert_plain_student(best, student, len(synthetic_names))
    metrics = YOLO(str(best)).val(data=str(synthetic_data), imgsz=64, batch=8, device="cpu", plots=False, verbose=False)
    # A 1-epoch student from scratch scores mAP 0 here, so check what the validation did instead: it ran with the
    # dataset's classes (carried by the checkpoint) over every GT box of the val split.
    assert metrics.names == synthetic_names
    assert int(metrics.nt_per_class.sum()) == count_labels(synthetic_data, "val")


def test_checkpoint_loads_without_yolokd(synthetic_data, teacher_checkpoint, tmp_path):
    """best.pt unpickles in a Python where importing yolokd is impossible (no yolokd class inside)."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model="yolov8n.yaml"),
            "teacher": str(teacher_checkpoint("yolov8s.yaml")),
            "distill": [{"loss": "bckd"}, {"loss": "mimic"}],
        }
    )
    best = train_experiment(experiment) / "weights" / "best.pt"
    code = (
        "import sys; sys.modules['yolokd'] = None\n"
        "from ultralytics import YOLO\n"
        f"model = YOLO({str(best)!r}); print(type(model.model).__name__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "DetectionModel" in result.stdout


def test_both_branches_of_an_end_to_end_head(synthetic_data, teacher_checkpoint, tmp_path):
    """YOLO26: BCKD on one2many and on one2one in one run, logged as bckd_* and bckd_*_o2o."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model="yolo26n.yaml"),
            "teacher": str(teacher_checkpoint("yolo26s.yaml")),
            "distill": [{"loss": "bckd"}, {"loss": "bckd", "branch": "one2one"}],
        }
    )
    (row,) = read_results(train_experiment(experiment))
    for column in ("train/bckd_cls", "train/bckd_loc_o2o", "val/bckd_cls_o2o", "val/bckd_loc"):
        assert math.isfinite(row[column]) and row[column] > 0, column


def test_mixed_branches_of_an_end_to_end_head(synthetic_data, calibrated_teacher, tmp_path):
    """YOLO26: CrossKD (reads stage outputs) on one2many with BCKD (reads none) on one2one trains and logs both."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model="yolo26n.yaml"),
            "teacher": str(calibrated_teacher("yolo26s.yaml")),
            "distill": [{"loss": "crosskd"}, {"loss": "bckd", "branch": "one2one"}],
        }
    )
    (row,) = read_results(train_experiment(experiment))
    for column in ("train/crosskd_cls", "train/crosskd_loc", "train/bckd_cls_o2o", "val/bckd_loc_o2o"):
        assert math.isfinite(row[column]) and row[column] > 0, column
