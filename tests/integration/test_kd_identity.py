"""What a KD run adds besides the KD gradient leaves the student's training unchanged.

The teacher's forward, the balance measurement (at the start and after each epoch), the recording hooks, the KD
modules and their optimiser must not touch the student's data order, augmentation, RNG, BatchNorm statistics or
optimiser: with every KD term multiplied by 0, a KD run trains the student bit for bit as the baseline, and the
baseline (no methods) bit for bit as Ultralytics' own DetectionTrainer. A gap between a method's row and the
baseline's in ``yolokd study`` is then the KD gradient's doing, not the trainer's.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_args
from ultralytics.models.yolo.detect import DetectionTrainer

from yolokd.config import load_experiment
from yolokd.engine.distiller import Distiller
from yolokd.engine.seeding import SeededDetectionTrainer
from yolokd.engine.trainer import DistillationTrainer, train_experiment

pytestmark = pytest.mark.integration


def _student(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "weights" / "last.pt", weights_only=False)["model"].state_dict()


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, f"{len(different)} tensors differ, first {different[:3]}"


@pytest.fixture(scope="module")
def schedule(synthetic_data, tmp_path_factory):
    """2 epochs with a warm-up, augmentation on (HSV, flips, translate/scale) and AdamW, as the study's CPU runs."""
    project = tmp_path_factory.mktemp("identity")
    return tiny_train_args(
        synthetic_data, project, "run", model="yolov8n.yaml", epochs=2, warmup_epochs=1, optimizer="AdamW", lr0=0.002,
        val=False, deterministic=True,
    )  # fmt: skip


def test_the_baseline_is_ultralytics_own_training(schedule):
    """No methods: yolokd train is Ultralytics' DetectionTrainer, weights bit for bit."""
    plain = DetectionTrainer(overrides={**schedule, "name": "ultralytics"})
    plain.train()
    baseline = train_experiment(load_experiment({**schedule, "name": "baseline"}))
    _assert_same(_student(Path(plain.save_dir)), _student(Path(baseline)))


def test_a_kd_run_with_zero_kd_gradient_trains_the_baseline(schedule, teacher_checkpoint, monkeypatch):
    """BCKD + CrossKD + MGD (outputs, the teacher's head, a generator) with their terms x 0: the baseline's student."""
    baseline = train_experiment(load_experiment({**schedule, "name": "baseline_b"}))
    original_call, original_measure = Distiller.__call__, DistillationTrainer.measure_balance
    calls, measuring = [], []

    def zeroed(self, *args, **kwargs):  # the training steps' KD terms x 0; the balance measures the real ones
        terms = original_call(self, *args, **kwargs)
        if measuring:
            return terms
        calls.append(sorted(terms))
        return {name: term * 0.0 for name, term in terms.items()}

    def measure(self, *args, **kwargs):
        measuring.append(1)
        try:
            return original_measure(self, *args, **kwargs)
        finally:
            measuring.pop()

    monkeypatch.setattr(Distiller, "__call__", zeroed)
    monkeypatch.setattr(DistillationTrainer, "measure_balance", measure)
    experiment = load_experiment(
        {
            **schedule,
            "name": "zero_kd",
            "teacher": str(teacher_checkpoint("yolov8s.yaml")),
            "distill": [{"loss": "bckd"}, {"loss": "crosskd"}, {"loss": "mgd"}],
        }
    )
    zero_kd = train_experiment(experiment)
    assert calls and any(name.startswith("crosskd") for name in calls[-1])  # the KD path ran in every step
    assert (Path(zero_kd) / "kd_balance.json").is_file()
    _assert_same(_student(Path(baseline)), _student(Path(zero_kd)))


@pytest.mark.parametrize("kind", ["yolokd", "native"])
def test_a_draw_before_training_leaves_the_run_unchanged(schedule, kind):
    """Python's generator moved between the trainer's seeding and its training (the first trainer of a process
    draws once there: Ultralytics' Ray Tune callback imports rich, which draws at import) trains the same student:
    the augmentation stream is re-seeded before the training loader is built (yolokd.engine.seeding)."""

    def run(name: str, draw: bool) -> Path:
        args = {**schedule, "name": f"{kind}_{name}"}
        trainer = (
            DistillationTrainer(load_experiment(args), overrides=args)
            if kind == "yolokd"
            else SeededDetectionTrainer(overrides=args)
        )
        if draw:  # a generator moved anywhere: a few draws can fall back in step in Ultralytics' random.sample of the
            random.seed(12345)  # image files (its rejection loop), another seed never does
        trainer.train()
        return Path(trainer.save_dir)

    _assert_same(_student(run("plain", False)), _student(run("drawn", True)))
