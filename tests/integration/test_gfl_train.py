"""GFL students end to end on the synthetic set: 1-epoch runs with and without KD (mixed and homogeneous pairs),
checkpoints that name their classes, Ultralytics validation, and ONNX export checked in onnxruntime."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_train_args
from ultralytics import YOLO

from yolokd.config import load_experiment
from yolokd.data import make_synthetic_dataset
from yolokd.engine.trainer import train_experiment
from yolokd.export.exporter import export_model
from yolokd.losses import LOSSES

pytestmark = pytest.mark.integration

# every detection method (LD included: GFL and YOLOv8 heads are both distribution heads)
EVERY_METHOD = [
    {"loss": "bckd"},
    {"loss": "crosskd"},
    {"loss": "ld"},
    {"loss": "pgd"},
    {"loss": "dfd"},
    {"loss": "gdetkd"},
    {"loss": "fgd"},
    {"loss": "mgd"},
    {"loss": "pkd"},
    {"loss": "cwd"},
    {"loss": "mimic"},
]


@pytest.fixture(scope="module")
def gfl_data(tmp_path_factory) -> Path:
    """data.yaml of a 32-train / 8-val synthetic set at 64 px."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("gfl_data"), num_train=32, num_val=8, imgsz=64, seed=0)


def _train(data: Path, folder: Path, model: str, teacher: Path | None = None, distill: list | None = None) -> Path:
    experiment = {**tiny_train_args(data, folder, "run", model=model), "distill": distill or []}
    if teacher is not None:
        experiment["teacher"] = str(teacher)
    return train_experiment(load_experiment(experiment))


def _kd_columns(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "results.csv") as f:
        (row,) = [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return {k: v for k, v in row.items() if k.startswith(("train/", "val/")) and not k.endswith(("box_loss", "_loss"))}


def _assert_every_term_finite_and_positive(run_dir: Path, distill: list[dict]) -> None:
    columns = _kd_columns(run_dir)
    terms = sum(len(LOSSES[entry["loss"]].term_suffixes) for entry in distill)
    assert len(columns) == 2 * terms, sorted(columns)  # each method's every term, in train and val
    bad = {k: v for k, v in columns.items() if not (math.isfinite(v) and v > 0)}
    assert not bad, bad


@pytest.fixture(scope="module")
def gfl_run(gfl_data, tmp_path_factory) -> Path:
    """A 1-epoch GFL-n run without a teacher (GT loss only)."""
    return _train(gfl_data, tmp_path_factory.mktemp("gfl_plain"), "gfl-yolov8n.yaml")


def test_gt_only_run_logs_gfl_terms(gfl_run):
    """GIoU, QFL and DFL reach results.csv under Ultralytics' names, finite, for train and val."""
    with open(gfl_run / "results.csv") as f:
        (row,) = [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    for column in ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/dfl_loss"):
        assert math.isfinite(row[column]) and row[column] > 0, column


def test_checkpoint_names_its_classes_and_ultralytics_validates_it(gfl_run, gfl_data):
    """best.pt pickles yolokd's model and head classes (loading needs yolokd); plain YOLO loads and validates it."""
    best = gfl_run / "weights" / "best.pt"
    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(best))
    assert {"yolokd.models.model.DenseDetectionModel", "yolokd.models.gfl.GFLDetect"} <= names
    metrics = YOLO(str(best)).val(data=str(gfl_data), imgsz=64, batch=8, device="cpu", plots=False, verbose=False)
    labels = Path(yaml.safe_load(gfl_data.read_text())["path"]) / "labels" / "val"
    assert int(metrics.nt_per_class.sum()) == sum(len(p.read_text().splitlines()) for p in labels.glob("*.txt"))


def test_onnx_export_passes_checks_in_onnxruntime(gfl_run, gfl_data):
    """yolokd's ONNX export of a GFL student: parity with PyTorch in onnxruntime, same graph as a plain model, mAP."""
    exported = export_model(gfl_run / "weights" / "best.pt", format="onnx", imgsz=64, data=str(gfl_data))
    assert exported.report["passed"], exported.problems
    graph = exported.report["checks"]["graph"]
    assert graph["outputs"][0][1] == [1, 4 + 8, 84]  # (B, 4 + C, A): Ultralytics' detection layout


def test_every_method_from_a_yolov8_teacher(gfl_data, calibrated_teacher, tmp_path):
    """Mixed pair, YOLOv8s -> GFL-n: every detection method's terms are finite and > 0 in training and validation."""
    run_dir = _train(gfl_data, tmp_path, "gfl-yolov8n.yaml", calibrated_teacher("yolov8s.yaml"), EVERY_METHOD)
    _assert_every_term_finite_and_positive(run_dir, EVERY_METHOD)


def test_homogeneous_gfl_pair_with_the_papers_cut(gfl_data, calibrated_teacher, tmp_path):
    """GFL-s -> GFL-n: CrossKD at the paper's cut (stage 3 of 4, through the teacher's shared towers), LD, BCKD,
    PGD, DFD, G-DetKD: every term finite and > 0."""
    distill = [{"loss": "crosskd", "stage": 3}, {"loss": "ld"}, {"loss": "bckd"}, {"loss": "pgd"}, {"loss": "dfd"}]
    distill.append({"loss": "gdetkd"})
    run_dir = _train(gfl_data, tmp_path, "gfl-yolov8n.yaml", calibrated_teacher("gfl-yolov8s.yaml"), distill)
    _assert_every_term_finite_and_positive(run_dir, distill)


def test_gfl_teacher_for_a_yolov8_student(gfl_data, calibrated_teacher, tmp_path):
    """Mixed pair the other way, GFL-s -> YOLOv8n: each model decodes its own boxes; BCKD, CrossKD, LD run."""
    distill = [{"loss": "bckd"}, {"loss": "crosskd"}, {"loss": "ld"}]
    run_dir = _train(gfl_data, tmp_path, "yolov8n.yaml", calibrated_teacher("gfl-yolov8s.yaml"), distill)
    _assert_every_term_finite_and_positive(run_dir, distill)
