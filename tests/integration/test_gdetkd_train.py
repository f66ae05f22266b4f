"""1-epoch G-DetKD runs on the synthetic set: SGFI and CKD logged, head transfer, the CKD queue across a resume."""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import pytest
import torch
from conftest import tiny_train_args
from test_train_kd import assert_plain_student, read_results

from yolokd.config import load_experiment
from yolokd.engine.checkpoint import kd_state_path
from yolokd.engine.trainer import DistillationTrainer, train_experiment

pytestmark = pytest.mark.integration

TERMS = ("gdetkd_sgfi", "gdetkd_ckd")
TRANSFER_LOG = "gdetkd head transfer copied"


@contextmanager
def captured_log():
    """Messages sent to the Ultralytics logger (which yolokd logs through) while the block runs."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("ultralytics")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _experiment(data, project, student, teacher, epochs=1, **entry):
    return load_experiment(
        {
            **tiny_train_args(data, project, "run", model=student, epochs=epochs),
            "teacher": str(teacher),
            "distill": [{"loss": "gdetkd", **entry}],
        }
    )


PAIRS = [("yolov8n.yaml", "yolov8s.yaml"), ("yolov8n.yaml", "yolo11s.yaml")]  # homogeneous, heterogeneous


@pytest.mark.parametrize(("student", "teacher"), PAIRS, ids=[f"{s[:-5]}-from-{t[:-5]}" for s, t in PAIRS])
def test_one_epoch(student, teacher, synthetic_data, synthetic_names, calibrated_teacher, tmp_path):
    """One epoch with head transfer: finite non-zero train/val terms, the transfer logged, best.pt a plain student."""
    experiment = _experiment(
        synthetic_data, tmp_path, student, calibrated_teacher(teacher), init_head_from_teacher=True
    )
    with captured_log() as messages:
        run_dir = train_experiment(experiment)
    (transfer,) = [m for m in messages if TRANSFER_LOG in m]
    assert "dfl.conv.weight" in transfer and "kept" in transfer and "cv2.0.0.conv.weight (student" in transfer
    (row,) = read_results(run_dir)
    for column in [f"{split}/{term}" for split in ("train", "val") for term in TERMS]:
        assert math.isfinite(row[column]) and row[column] > 0, column
    assert_plain_student(run_dir / "weights" / "best.pt", student, len(synthetic_names))


def test_resume_restores_the_queue_and_does_not_transfer_again(synthetic_data, calibrated_teacher, tmp_path):
    """Stopped after epoch 1 of 2: kd_state.pt holds a filled queue, resume reloads it and skips the head transfer."""
    experiment = _experiment(
        synthetic_data,
        tmp_path,
        "yolov8n.yaml",
        calibrated_teacher("yolov8s.yaml"),
        epochs=2,
        init_head_from_teacher=True,
    )
    first = DistillationTrainer(experiment, overrides=experiment.train_args)

    def interrupt(trainer):
        raise KeyboardInterrupt("simulated interruption after the epoch-1 checkpoint")

    first.add_callback("on_model_save", interrupt)
    with captured_log() as messages, pytest.raises(KeyboardInterrupt):
        first.train()
    assert sum(TRANSFER_LOG in m for m in messages) == 1
    saved = torch.load(kd_state_path(first.last), weights_only=True)["losses"]
    (valid_key,) = [k for k in saved if k.endswith("queue.valid")]
    assert saved[valid_key].sum() > 0 and saved[valid_key.replace("valid", "pointer")] > 0

    resumed = DistillationTrainer(None, overrides={"resume": str(first.last)})
    seen = {}
    resumed.add_callback(
        "on_train_start",
        lambda trainer: seen.update({k: v.clone() for k, v in trainer.distiller.losses.state_dict().items()}),
    )
    with captured_log() as messages:
        resumed.train()
    assert not any(TRANSFER_LOG in m for m in messages)
    for key in [k for k in saved if ".queue." in k]:
        assert torch.equal(seen[key], saved[key]), key
    assert [row["epoch"] for row in read_results(resumed.save_dir)] == [1.0, 2.0]
