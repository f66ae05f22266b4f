"""FCOS students end to end on the synthetic set: a 1-epoch GT-only run exported to ONNX (checks in onnxruntime),
and 1-epoch KD runs (YOLOv8s -> FCOS-n with every method that applies, FCOS-s -> FCOS-n with PGD, BCKD and CrossKD with
its centerness term, FCOS-s -> YOLOv8n with CrossKD's centerness term)."""

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

# LD is left out: it distils bin distributions, which FCOS (reg_max = 1) has not (refused when the run is built)
METHODS = ["bckd", "crosskd", "pgd", "dfd", "gdetkd", "fgd", "mgd", "pkd", "cwd", "mimic"]


@pytest.fixture(scope="module")
def fcos_data(tmp_path_factory) -> Path:
    """data.yaml of a 32-train / 8-val synthetic set at 64 px."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("fcos_data"), num_train=32, num_val=8, imgsz=64, seed=0)


def _train(data: Path, folder: Path, model: str, teacher: Path | None = None, distill: list | None = None) -> Path:
    experiment = {**tiny_train_args(data, folder, "run", model=model), "distill": distill or []}
    if teacher is not None:
        experiment["teacher"] = str(teacher)
    return train_experiment(load_experiment(experiment))


def _results(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "results.csv") as f:
        (row,) = [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return row


def _assert_every_term_finite_and_positive(run_dir: Path, distill: list[dict]) -> None:
    row = _results(run_dir)
    names = [
        f"{split}/{entry['loss']}_{suffix}"
        for entry in distill
        for suffix in LOSSES[entry["loss"]].term_suffixes + (("ctr",) if entry.get("ctr_weight") else ())
        for split in ("train", "val")
    ]
    bad = {name: row.get(name) for name in names if not (math.isfinite(row.get(name, math.nan)) and row[name] > 0)}
    assert not bad, bad


def test_gt_only_run_exports_to_onnx(fcos_data, tmp_path):
    """GIoU, focal and centerness terms are logged; the ONNX export passes its checks (onnxruntime parity, plain
    graph, mAP) with Ultralytics' (B, 4 + C, A) output, scores = class x centerness."""
    run_dir = _train(fcos_data, tmp_path, "fcos-yolov8n.yaml")
    with open(run_dir / "results.csv") as f:
        (row,) = [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    assert all(math.isfinite(row[f"train/{n}_loss"]) and row[f"train/{n}_loss"] > 0 for n in ("box", "cls", "ctr"))
    best = run_dir / "weights" / "best.pt"
    assert "yolokd.models.fcos.FCOSDetect" in set(torch.serialization.get_unsafe_globals_in_checkpoint(best))
    exported = export_model(best, format="onnx", imgsz=64, data=str(fcos_data))
    assert exported.report["passed"], exported.problems
    assert exported.report["checks"]["graph"]["outputs"][0][1] == [1, 4 + 8, 84]


def test_every_applicable_method_from_a_yolov8_teacher(fcos_data, calibrated_teacher, tmp_path):
    """Mixed pair, YOLOv8s -> FCOS-n: every method but LD; every term finite and > 0 in training and validation; no
    centerness term (the teacher has none; CrossKD's is off by default)."""
    distill = [{"loss": name} for name in METHODS]
    run_dir = _train(fcos_data, tmp_path, "fcos-yolov8n.yaml", calibrated_teacher("yolov8s.yaml"), distill)
    _assert_every_term_finite_and_positive(run_dir, distill)
    assert not [name for name in _results(run_dir) if "ctr" in name and "crosskd" in name]


def test_crosskd_centerness_is_refused_for_a_yolo_teacher(fcos_data, teacher_checkpoint, tmp_path):
    """CrossKD's centerness term distils the teacher's centerness: a YOLOv8s teacher is refused when the run is
    built, naming the fix."""
    with pytest.raises(ValueError, match=r"ctr_weight=1.0 .*has no centerness branch; set ctr_weight: 0"):
        _train(
            fcos_data,
            tmp_path,
            "fcos-yolov8n.yaml",
            teacher_checkpoint("yolov8s.yaml"),
            [{"loss": "crosskd", "ctr_weight": 1.0}],
        )


def test_homogeneous_fcos_pair(fcos_data, calibrated_teacher, tmp_path):
    """FCOS-s -> FCOS-n: PGD, CrossKD at stage 3 (GIoU box term: FCOS teachers regress ltrb) with its centerness term
    (``crosskd_ctr``, ctr_weight 1.0 as the authors' ATSS config), BCKD."""
    distill = [{"loss": "pgd"}, {"loss": "crosskd", "stage": 3, "ctr_weight": 1.0}, {"loss": "bckd"}]
    run_dir = _train(fcos_data, tmp_path, "fcos-yolov8n.yaml", calibrated_teacher("fcos-yolov8s.yaml"), distill)
    _assert_every_term_finite_and_positive(run_dir, distill)


def test_fcos_teacher_to_yolo_student(fcos_data, calibrated_teacher, tmp_path):
    """FCOS-s -> YOLOv8n: CrossKD (stage 1) with the centerness term: the student's features cross into the teacher's
    box tower and centerness predictor; every term finite and > 0."""
    distill = [{"loss": "crosskd", "ctr_weight": 1.0}]
    run_dir = _train(fcos_data, tmp_path, "yolov8n.yaml", calibrated_teacher("fcos-yolov8s.yaml"), distill)
    _assert_every_term_finite_and_positive(run_dir, distill)


def test_ld_is_refused_on_fcos(fcos_data, teacher_checkpoint, tmp_path):
    """LD needs bin distributions: an FCOS student is refused when the run is built, naming the alternatives."""
    with pytest.raises(ValueError, match=r"loss 'ld' distils DFL box distributions.*FCOS"):
        _train(fcos_data, tmp_path, "fcos-yolov8n.yaml", teacher_checkpoint("yolov8s.yaml"), [{"loss": "ld"}])
