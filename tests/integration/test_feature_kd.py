"""1-epoch runs of the neck-feature methods (DFD, MGD, PKD, CWD) on the synthetic set, YOLOv8s -> YOLOv8n."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_train_args
from test_train_kd import assert_plain_student, read_results

from yolokd.config import load_experiment
from yolokd.engine.checkpoint import kd_state_path
from yolokd.engine.trainer import train_experiment

pytestmark = pytest.mark.integration

FEATURE_TERMS = ("dfd_high_disparity", "dfd_low_disparity", "mgd_feat", "pkd_feat", "cwd_feat")


def test_one_epoch_feature_methods_with_bckd(synthetic_data, synthetic_names, calibrated_teacher, tmp_path):
    """BCKD + DFD + MGD + PKD + CWD in one run: finite non-zero train/val terms; checkpoints hold the student only."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model="yolov8n.yaml"),
            "teacher": str(calibrated_teacher("yolov8s.yaml")),
            "distill": [{"loss": "bckd"}, {"loss": "dfd"}, {"loss": "mgd"}, {"loss": "pkd"}, {"loss": "cwd"}],
        }
    )
    run_dir = train_experiment(experiment)
    (row,) = read_results(run_dir)
    for term in FEATURE_TERMS:
        for column in (f"train/{term}", f"val/{term}"):
            assert math.isfinite(row[column]) and row[column] > 0, column
    for checkpoint in ("best.pt", "last.pt"):
        assert_plain_student(run_dir / "weights" / checkpoint, "yolov8n.yaml", len(synthetic_names))


def test_trained_kd_modules_live_in_the_kd_state(synthetic_data, calibrated_teacher, tmp_path):
    """DFD's f_trans and MGD's generators are saved in kd_state.pt (for resume), not in the student."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model="yolov8n.yaml"),
            "teacher": str(calibrated_teacher("yolov8s.yaml")),
            "distill": [{"loss": "dfd"}, {"loss": "mgd"}],
        }
    )
    run_dir = train_experiment(experiment)
    keys = torch.load(kd_state_path(run_dir / "weights" / "last.pt"), weights_only=True)["losses"]
    assert any(".transforms." in key for key in keys) and any(".generators." in key for key in keys)
