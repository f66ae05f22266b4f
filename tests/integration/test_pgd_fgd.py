"""1-epoch PGD + FGD runs on the synthetic set: every term logged at train and val, clean student checkpoints."""

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
from yolokd.engine.trainer import train_experiment

pytestmark = pytest.mark.integration

PAIRS = [("yolov8n.yaml", "yolov8s.yaml"), ("yolo11n.yaml", "yolo11s.yaml")]
TERMS = ("pgd_cls_fg", "pgd_cls_bg", "pgd_box", "pgd_att", "fgd_fg", "fgd_bg", "fgd_att", "fgd_global")


@pytest.fixture(scope="module")
def calibrated_teacher(synthetic_data, synthetic_names, tmp_path_factory):
    """Factory: a stand-in teacher whose BatchNorm statistics were measured on the synthetic train images.

    An untrained model in eval mode keeps BatchNorm's initial statistics, so its neck and head features shrink to
    ~1e-6 or less and every feature term would only measure the student's own features. One cumulative pass in
    train mode (no weight update) gives eval-mode features of a trained model's scale.
    """
    root = Path(yaml.safe_load(synthetic_data.read_text())["path"])
    paths = sorted((root / "images" / "train").glob("*"))
    images = np.stack([cv2.imread(str(p))[:, :, ::-1] for p in paths]).astype(np.float32) / 255
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    folder = tmp_path_factory.mktemp("calibrated")

    def make(model_yaml: str) -> Path:
        torch.manual_seed(0)
        model = DetectionModel(model_yaml, nc=len(synthetic_names), verbose=False)
        model.names = dict(synthetic_names)
        batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for bn in batch_norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the pass
        model.train()
        with torch.no_grad():
            model(batch)
        for bn in batch_norms:
            bn.momentum = 0.03
        path = folder / model_yaml.replace(".yaml", ".pt")
        torch.save({"model": model.eval().half(), "train_args": {}}, path)
        return path

    return make


@pytest.mark.parametrize(("student", "teacher"), PAIRS, ids=[f"{s[:-5]}-from-{t[:-5]}" for s, t in PAIRS])
def test_one_epoch_pgd_and_fgd(student, teacher, synthetic_data, synthetic_names, calibrated_teacher, tmp_path):
    """PGD + FGD in one run: finite non-zero train/val terms; best.pt and last.pt hold the plain student only."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model=student),
            "teacher": str(calibrated_teacher(teacher)),
            "distill": [{"loss": "pgd"}, {"loss": "fgd"}],
        }
    )
    run_dir = train_experiment(experiment)
    (row,) = read_results(run_dir)
    for term in TERMS:
        for column in (f"train/{term}", f"val/{term}"):
            assert math.isfinite(row[column]) and row[column] > 0, column
    for checkpoint in ("best.pt", "last.pt"):
        assert_plain_student(run_dir / "weights" / checkpoint, student, len(synthetic_names))
