"""1-epoch PGD + FGD runs on the synthetic set: every term logged at train and val, clean student checkpoints."""

from __future__ import annotations

import math

import pytest
from conftest import tiny_train_args
from test_train_kd import assert_plain_student, read_results

from yolokd.config import load_experiment
from yolokd.engine.trainer import train_experiment

pytestmark = pytest.mark.integration

PAIRS = [("yolov8n.yaml", "yolov8s.yaml"), ("yolo11n.yaml", "yolo11s.yaml")]
TERMS = ("pgd_cls_fg", "pgd_cls_bg", "pgd_box", "pgd_att", "fgd_fg", "fgd_bg", "fgd_att", "fgd_global")


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
