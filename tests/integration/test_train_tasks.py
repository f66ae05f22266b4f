"""1-epoch KD runs of segment students (task trainer picked by the student's task): every KD term finite and
non-zero, and the saved student is a plain Ultralytics model of its task that loads, validates and exports to ONNX
with parity."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from conftest import tiny_train_args
from ultralytics import YOLO
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.nn.tasks import SegmentationModel

from yolokd.config import load_experiment
from yolokd.engine.trainer import (
    DistillationTrainer,
    SegmentationDistillationTrainer,
    student_task,
    train_experiment,
    trainer_for,
)

pytestmark = pytest.mark.integration


def read_row(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "results.csv") as f:
        (row,) = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return row


@pytest.fixture(scope="module")
def segment_run(segment_data, calibrated_teacher, tmp_path_factory) -> Path:
    """A 1-epoch YOLOv8n-seg run distilled from a calibrated YOLOv8s-seg: BCKD + mask KD + CrossKD (stages)."""
    experiment = load_experiment(
        {
            **tiny_train_args(segment_data, tmp_path_factory.mktemp("seg"), "run", model="yolov8n-seg.yaml"),
            "teacher": str(calibrated_teacher("yolov8s-seg.yaml")),
            "distill": [{"loss": "bckd"}, {"loss": "maskkd"}, {"loss": "crosskd"}],
        }
    )
    return train_experiment(experiment)


def test_segment_run_logs_every_kd_term_and_the_mask_loss(segment_run):
    """Ultralytics' segment loss columns (seg_loss) and every KD term, finite and > 0, in train and val."""
    row = read_row(segment_run)
    assert row["train/seg_loss"] > 0 and "metrics/mAP50-95(M)" in row
    for term in ("bckd_cls", "bckd_loc", "maskkd_mask", "crosskd_cls", "crosskd_loc"):
        for split in ("train", "val"):
            value = row[f"{split}/{term}"]
            assert math.isfinite(value) and value > 0, f"{split}/{term}"


def test_segment_student_is_a_plain_ultralytics_segmentation_model(segment_run, segment_data, synthetic_names):
    """best.pt holds a SegmentationModel with a fresh one's state keys and no KD residue; YOLO validates it as a
    segment model over every GT instance."""
    best = segment_run / "weights" / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt["model"]
    assert type(model) is SegmentationModel and not {"distill", "teacher", "kd_state"} & set(ckpt)
    fresh = SegmentationModel("yolov8n-seg.yaml", nc=len(synthetic_names), verbose=False)
    assert set(model.state_dict()) == set(fresh.state_dict()) and getattr(model, "criterion", None) is None
    yolo = YOLO(str(best))
    assert yolo.task == "segment"
    metrics = yolo.val(data=str(segment_data), imgsz=64, batch=8, device="cpu", plots=False, verbose=False)
    assert metrics.names == synthetic_names and hasattr(metrics, "seg") and int(metrics.nt_per_class.sum()) > 0


def test_segment_student_exports_to_onnx_with_parity(segment_run):
    """Ultralytics' ONNX export of best.pt: ONNX Runtime's detections+coefficients and prototypes match PyTorch."""
    best = segment_run / "weights" / "best.pt"
    onnx_path = Path(YOLO(str(best)).export(format="onnx", imgsz=64, device="cpu", simplify=False))
    model = YOLO(str(best)).model.float().eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        (decoded, proto), _ = model(image)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    assert len(outputs) == 2
    np.testing.assert_allclose(outputs[0], decoded.numpy(), atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(outputs[1], proto.numpy(), atol=1e-3, rtol=1e-3)


def test_train_picks_the_trainer_by_the_students_task(segment_run):
    """The student's task picks the trainer (a YAML by its head, a checkpoint by its model); the run says segment."""
    assert yaml.safe_load((segment_run / "args.yaml").read_text())["task"] == "segment"
    assert (
        student_task("yolov8n-seg.yaml") == "segment" and student_task(segment_run / "weights" / "last.pt") == "segment"
    )
    assert student_task("yolov8n.yaml") == "detect" and trainer_for("detect") is DistillationTrainer
    assert trainer_for("segment") is SegmentationDistillationTrainer
    assert issubclass(DistillationTrainer, DetectionTrainer) and issubclass(
        SegmentationDistillationTrainer, SegmentationTrainer
    )
    with pytest.raises(ValueError, match="cannot distil classify students"):
        trainer_for("classify")


def test_a_detect_teacher_for_a_segment_student_is_refused(segment_data, calibrated_teacher, tmp_path):
    """A detect teacher with a segment student stops when the run is built, in one line naming both tasks."""
    experiment = load_experiment(
        {
            **tiny_train_args(segment_data, tmp_path, "run", model="yolov8n-seg.yaml"),
            "teacher": str(calibrated_teacher("yolov8s.yaml")),
            "distill": [{"loss": "bckd"}],
        }
    )
    with pytest.raises(ValueError, match=r"teacher is a detect model .* student is a segment model") as error:
        train_experiment(experiment)
    assert "\n" not in str(error.value)
