"""RetinaNet students end to end on the synthetic set: a 1-epoch GT-only run exported to ONNX (checks in
onnxruntime), and 1-epoch KD runs: YOLOv8s -> RetinaNet-n with every method that applies, RetinaNet-s -> RetinaNet-n
and RetinaNet-s -> YOLOv8n (9 vs 1 anchors per cell)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_args

from yolokd.config import load_experiment
from yolokd.data import make_synthetic_dataset
from yolokd.engine.trainer import train_experiment
from yolokd.export.exporter import export_model
from yolokd.losses import LOSSES

pytestmark = pytest.mark.integration

# LD is left out: it distils bin distributions, which RetinaNet (four deltas per anchor) has not (refused when built).
# G-DetKD with its prediction term on: the per-anchor term that has to match 9 anchors per cell against 1.
EVERY_METHOD = [
    {"loss": "bckd"},
    {"loss": "crosskd"},
    {"loss": "pgd"},
    {"loss": "dfd"},
    {"loss": "gdetkd", "pred_weight": 1.0},
    {"loss": "fgd"},
    {"loss": "mgd"},
    {"loss": "pkd"},
    {"loss": "cwd"},
    {"loss": "mimic"},
]
HEAD_METHODS = [
    {"loss": "bckd"},
    {"loss": "crosskd", "stage": 3},
    {"loss": "pgd"},
    {"loss": "gdetkd", "pred_weight": 1.0},
]
TO_YOLO_METHODS = [
    {"loss": "bckd"},
    {"loss": "crosskd"},
    {"loss": "pgd"},
    {"loss": "dfd"},
    {"loss": "gdetkd", "pred_weight": 1.0},
]


@pytest.fixture(scope="module")
def retina_data(tmp_path_factory) -> Path:
    """data.yaml of a 32-train / 8-val synthetic set at 64 px."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("retina_data"), num_train=32, num_val=8, imgsz=64, seed=0)


def _train(data: Path, folder: Path, model: str, teacher: Path | None = None, distill: list | None = None) -> Path:
    experiment = {**tiny_train_args(data, folder, "run", model=model), "distill": distill or []}
    if teacher is not None:
        experiment["teacher"] = str(teacher)
    return train_experiment(load_experiment(experiment))


def _row(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "results.csv") as f:
        (row,) = [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return row


def _assert_every_term_finite_and_positive(run_dir: Path, distill: list[dict]) -> None:
    row = _row(run_dir)
    names = [
        f"{split}/{entry['loss']}_{suffix}"
        for entry in distill
        for suffix in LOSSES[entry["loss"]].term_suffixes + (("pred",) if entry.get("pred_weight") else ())
        for split in ("train", "val")
    ]
    bad = {name: row.get(name) for name in names if not (math.isfinite(row.get(name, math.nan)) and row[name] > 0)}
    assert not bad, bad


def test_gt_only_run_exports_to_onnx(retina_data, tmp_path):
    """Focal and L1 terms are logged; best.pt names RetinaNetDetect; the ONNX export passes its checks (onnxruntime
    parity, plain graph, mAP) with Ultralytics' (B, 4 + C, A) output, A = 84 cells x 9 anchors."""
    run_dir = _train(retina_data, tmp_path, "retinanet-yolov8n.yaml")
    row = _row(run_dir)
    assert all(math.isfinite(row[f"train/{n}_loss"]) and row[f"train/{n}_loss"] > 0 for n in ("box", "cls"))
    best = run_dir / "weights" / "best.pt"
    assert "yolokd.models.retinanet.RetinaNetDetect" in set(torch.serialization.get_unsafe_globals_in_checkpoint(best))
    exported = export_model(best, format="onnx", imgsz=64, data=str(retina_data))
    assert exported.report["passed"], exported.problems
    assert exported.report["checks"]["graph"]["outputs"][0][1] == [1, 4 + 8, 756]


@pytest.mark.parametrize(
    ("teacher", "student", "distill"),
    [
        ("yolov8s.yaml", "retinanet-yolov8n.yaml", EVERY_METHOD),
        ("retinanet-yolov8s.yaml", "retinanet-yolov8n.yaml", HEAD_METHODS),
        ("retinanet-yolov8s.yaml", "yolov8n.yaml", TO_YOLO_METHODS),
    ],
    ids=["yolov8s-to-retinanet", "retinanet-to-retinanet", "retinanet-to-yolov8n"],
)
def test_kd_pairs(retina_data, calibrated_teacher, tmp_path, teacher, student, distill):
    """Mixed (1 vs 9 anchors per cell, both ways) and homogeneous pairs: every term finite and > 0 in training and
    validation (CrossKD at stage 3 with its GIoU box term on RetinaNet teachers, BCKD cell by cell across layouts)."""
    run_dir = _train(retina_data, tmp_path, student, calibrated_teacher(teacher), distill)
    _assert_every_term_finite_and_positive(run_dir, distill)


def test_ld_is_refused_on_retinanet(retina_data, teacher_checkpoint, tmp_path):
    """LD needs bin distributions: a RetinaNet student is refused when the run is built, naming the alternatives."""
    with pytest.raises(ValueError, match=r"loss 'ld' distils DFL box distributions.*RetinaNet.*Use 'bckd'"):
        _train(retina_data, tmp_path, "retinanet-yolov8n.yaml", teacher_checkpoint("yolov8s.yaml"), [{"loss": "ld"}])
