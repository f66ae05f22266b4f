"""1-epoch CrossKD + LD runs on the synthetic set: every term logged and non-zero, clean student checkpoints."""

from __future__ import annotations

import math

import pytest
from conftest import tiny_train_args
from test_train_kd import assert_plain_student, read_results

from yolokd.config import load_experiment
from yolokd.engine.trainer import train_experiment

pytestmark = pytest.mark.integration

CROSSKD_LD = [{"loss": "crosskd"}, {"loss": "ld"}]
CROSSKD_BOTH_BRANCHES = [{"loss": "crosskd"}, {"loss": "crosskd", "branch": "one2one"}]
RUNS = [
    # (student, teacher, distill, logged terms); one run per pair, methods combined to save time
    ("yolov8n.yaml", "yolov8s.yaml", CROSSKD_LD, ("crosskd_cls", "crosskd_loc", "ld_loc")),
    ("yolo11n.yaml", "yolo11s.yaml", CROSSKD_LD, ("crosskd_cls", "crosskd_loc", "ld_loc")),
    ("yolo26n.yaml", "yolo26s.yaml", CROSSKD_BOTH_BRANCHES, ("crosskd_cls", "crosskd_loc", "crosskd_loc_o2o")),
    ("yolov8n.yaml", "yolo11s.yaml", CROSSKD_LD, ("crosskd_cls", "crosskd_loc", "ld_loc")),  # cross-family
]


@pytest.mark.parametrize(
    ("student", "teacher", "distill", "terms"), RUNS, ids=[f"{r[0][:-5]}-from-{r[1][:-5]}" for r in RUNS]
)
def test_one_epoch(student, teacher, distill, terms, synthetic_data, synthetic_names, calibrated_teacher, tmp_path):
    """One epoch: finite, non-zero train and val terms; best.pt is a plain student (no KD modules, no hooks)."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model=student),
            "teacher": str(calibrated_teacher(teacher)),
            "distill": distill,
        }
    )
    run_dir = train_experiment(experiment)
    (row,) = read_results(run_dir)
    for column in [f"{split}/{term}" for split in ("train", "val") for term in terms]:
        assert math.isfinite(row[column]) and row[column] > 0, column
    assert_plain_student(run_dir / "weights" / "best.pt", student, len(synthetic_names))


def test_ld_on_yolo26_is_refused_when_the_run_is_built(synthetic_data, teacher_checkpoint, tmp_path):
    """LD on a reg_max=1 head stops before training with an error naming the alternatives."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path, "run", model="yolo26n.yaml"),
            "teacher": str(teacher_checkpoint("yolo26s.yaml")),
            "distill": [{"loss": "ld"}],
        }
    )
    with pytest.raises(ValueError, match=r"loss 'ld' distils DFL box distributions.*reg_max=1.*'bckd'.*'crosskd'"):
        train_experiment(experiment)
