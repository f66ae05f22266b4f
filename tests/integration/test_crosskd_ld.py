"""1-epoch CrossKD + LD runs on the synthetic set: every term logged and non-zero, clean student checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_args
from test_train_kd import assert_plain_student, read_results
from ultralytics.nn.tasks import DetectionModel

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


@pytest.fixture(scope="module")
def calibrated_teacher(tmp_path_factory, synthetic_names):
    """Factory: a stand-in teacher checkpoint whose BatchNorm statistics come from one random batch.

    The shared ``teacher_checkpoint`` keeps the initial statistics (mean 0, var 1), under which an untrained
    model's activations shrink layer by layer: its head outputs are near-constant, so head-level KD terms are
    1e-12-sized and their sign is rounding noise. Calibrated statistics keep every feature O(1).
    """
    folder = tmp_path_factory.mktemp("calibrated_teachers")

    def make(model_yaml: str) -> Path:
        path = folder / model_yaml.replace(".yaml", ".pt")
        if not path.exists():
            torch.manual_seed(0)
            model = DetectionModel(model_yaml, nc=len(synthetic_names), verbose=False)
            batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            for module in batch_norms:
                module.momentum = 1.0
            with torch.no_grad():
                model.train()(torch.rand(4, 3, 64, 64))
            for module in batch_norms:
                module.momentum = 0.03
            model.names = dict(synthetic_names)
            torch.save({"model": model.eval().half(), "train_args": {}}, path)
        return path

    return make


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
