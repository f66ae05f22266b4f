"""1-epoch runs of the neck-feature methods (DFD, MGD, PKD, CWD) on the synthetic set, YOLOv8s -> YOLOv8n."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_train_args
from test_train_kd import assert_plain_student, read_results
from ultralytics.nn.tasks import DetectionModel

from yolokd.config import load_experiment
from yolokd.engine.checkpoint import kd_state_path
from yolokd.engine.trainer import train_experiment

pytestmark = pytest.mark.integration

FEATURE_TERMS = ("dfd_hd", "dfd_ld", "mgd_feat", "pkd_feat", "cwd_feat")


@pytest.fixture(scope="module")
def calibrated_teacher(synthetic_data, synthetic_names, tmp_path_factory) -> Path:
    """A YOLOv8s stand-in teacher whose BatchNorm statistics were measured on the synthetic train images.

    An untrained model in eval mode keeps BatchNorm's initial statistics, so its neck features are nearly constant
    over space and a spatial-distribution term such as CWD's is ~0 at validation. Measuring the statistics (one
    cumulative pass, no weight update) gives eval-mode features with the spread of a trained model's.
    """
    torch.manual_seed(0)
    model = DetectionModel("yolov8s.yaml", nc=len(synthetic_names), verbose=False)
    model.names = dict(synthetic_names)
    root = Path(yaml.safe_load(synthetic_data.read_text())["path"])
    paths = sorted((root / "images" / "train").glob("*"))
    images = np.stack([cv2.imread(str(p))[:, :, ::-1] for p in paths]).astype(np.float32) / 255
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in batch_norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the pass
    model.train()
    with torch.no_grad():
        model(batch)
    for bn in batch_norms:
        bn.momentum = 0.03
    path = tmp_path_factory.mktemp("calibrated") / "yolov8s.pt"
    torch.save({"model": model.eval().half(), "train_args": {}}, path)
    return path


def test_one_epoch_feature_methods_with_bckd(synthetic_data, synthetic_names, calibrated_teacher, tmp_path):
    """BCKD + DFD + MGD + PKD + CWD in one run: finite non-zero train/val terms; checkpoints hold the student only."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model="yolov8n.yaml"),
            "teacher": str(calibrated_teacher),
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
            "teacher": str(calibrated_teacher),
            "distill": [{"loss": "dfd"}, {"loss": "mgd"}],
        }
    )
    run_dir = train_experiment(experiment)
    keys = torch.load(kd_state_path(run_dir / "weights" / "last.pt"), weights_only=True)["losses"]
    assert any(".transforms." in key for key in keys) and any(".generators." in key for key in keys)
