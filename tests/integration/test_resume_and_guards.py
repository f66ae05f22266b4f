"""Interrupted runs resume with their KD modules; the KD schedule and the NaN guard act as documented."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_train_args
from test_train_kd import read_results

from yolokd.config import load_experiment
from yolokd.engine.checkpoint import kd_state_path
from yolokd.engine.distiller import Distiller
from yolokd.engine.trainer import DistillationTrainer, train_experiment
from yolokd.losses.bckd import BCKDLoss
from yolokd.losses.common import FittedAligner

pytestmark = pytest.mark.integration


def _experiment(data, project, teacher, **extra):
    train_args = tiny_train_args(data, project, "run", model="yolov8n.yaml", **extra.pop("train", {}))
    return load_experiment({**train_args, "teacher": str(teacher), **extra})


def _stopped_after_first_save(experiment) -> DistillationTrainer:
    """Train until the epoch-1 checkpoint is written, then stop as an interruption would."""
    trainer = DistillationTrainer(experiment, overrides=experiment.train_args)

    def interrupt(_trainer):
        raise KeyboardInterrupt("simulated interruption after the epoch-1 checkpoint")

    trainer.add_callback("on_model_save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    return trainer


def test_resume_continues_epochs_and_kd_modules(synthetic_data, teacher_checkpoint, tmp_path):
    """Stopped after epoch 1 of 2, resume starts at epoch 2 with the saved aligner weights and KD optimiser state."""
    experiment = _experiment(
        synthetic_data,
        tmp_path,
        teacher_checkpoint("yolov8s.yaml"),
        distill=[{"loss": "bckd"}, {"loss": "mimic"}],
        train={"epochs": 2},
    )
    first = _stopped_after_first_save(experiment)
    last = first.last
    saved = torch.load(kd_state_path(last), weights_only=True)
    assert saved["epoch"] == 0 and any("aligner" in key for key in saved["losses"])
    assert saved["balance"] == first.balance.to_dict() and (first.save_dir / "kd_balance.json").is_file()
    assert set(first.balance.scales) == {"bckd_cls_bckd_loc", "mimic_feat"} and first.balance.weight_mode == "auto"

    resumed = DistillationTrainer(None, overrides={"resume": str(last)})
    resumed.measure_balance = lambda: pytest.fail("a resumed run must reuse its frozen balance, not re-measure it")
    seen = {}
    resumed.add_callback(
        "on_train_start",
        lambda trainer: seen.update(
            start=trainer.start_epoch,
            losses={k: v.clone() for k, v in trainer.distiller.losses.state_dict().items()},
            steps=[s["step"].item() for s in trainer.kd_optimizer.state_dict()["state"].values()],
            scales=dict(trainer.distiller.scales),
        ),
    )
    resumed.train()
    assert seen["start"] == 1
    assert seen["scales"] == first.balance.scales and resumed.balance == first.balance  # bit for bit
    for key, value in saved["losses"].items():
        assert torch.equal(seen["losses"][key], value), key
    assert seen["steps"] == [s["step"].item() for s in saved["optimizer"]["state"].values()] and seen["steps"]
    assert [row["epoch"] for row in read_results(resumed.save_dir)] == [1.0, 2.0]


def test_schedule_switches_kd_off_and_skips_teacher(synthetic_data, teacher_checkpoint, tmp_path, monkeypatch):
    """off_last_epochs=1 of 2: epoch 2 logs zero KD terms and never runs the teacher."""
    calls = []
    original = Distiller.teacher_views
    monkeypatch.setattr(Distiller, "teacher_views", lambda self, images: calls.append(1) or original(self, images))
    experiment = _experiment(
        synthetic_data,
        tmp_path,
        teacher_checkpoint("yolov8s.yaml"),
        distill=[{"loss": "bckd"}],
        schedule={"off_last_epochs": 1},
        train={"epochs": 2, "val": False},
    )
    trainer = DistillationTrainer(experiment, overrides=experiment.train_args)
    trainer.add_callback("on_train_epoch_end", lambda t: calls.append(f"end{t.epoch}"))
    trainer.train()
    first, second = read_results(trainer.save_dir)
    assert first["train/bckd_cls"] > 0 and second["train/bckd_cls"] == 0 and second["train/bckd_loc"] == 0
    epoch_two = calls[calls.index("end0") + 1 : calls.index("end1")]
    assert epoch_two == []  # no teacher forward while KD is off (validation of epoch 2 is after "end1")
    teacher = trainer.distiller.teacher
    assert not teacher.training and all(p.grad is None and not p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("first_nan_call", [0, 1], ids=["at-balance", "in-training"])
def test_nan_kd_term_stops_with_a_clear_error(
    synthetic_data, teacher_checkpoint, tmp_path, monkeypatch, first_nan_call
):
    """A NaN KD term raises FloatingPointError naming the term before any optimiser step uses it: at the balance
    step when the first batch is already NaN, by the training guard when a later one is."""
    original = BCKDLoss.forward
    calls = []

    def nan_loc(self, student, teacher, targets):
        terms = original(self, student, teacher, targets)
        if len(calls) >= first_nan_call:
            terms["bckd_loc"] = terms["bckd_loc"] * float("nan")
        calls.append(1)
        return terms

    monkeypatch.setattr(BCKDLoss, "forward", nan_loc)
    experiment = _experiment(
        synthetic_data, tmp_path, teacher_checkpoint("yolov8s.yaml"), distill=[{"loss": "bckd"}], balance={"batches": 1}
    )
    where = "at the KD balance measurement" if first_nan_call == 0 else "in epoch 1"
    with pytest.raises(FloatingPointError, match=rf"\['bckd_loc'\] became NaN/Inf {where}"):
        train_experiment(experiment)


def test_resuming_a_finished_run_is_a_clear_error(synthetic_data, teacher_checkpoint, tmp_path):
    """A run that completed all its epochs cannot be resumed; the error says to start a new run, and comes before
    anything is made (Ultralytics would first open a new numbered run folder: the final last.pt has no save_dir)."""
    experiment = _experiment(
        synthetic_data,
        tmp_path,
        teacher_checkpoint("yolov8s.yaml"),
        distill=[{"loss": "bckd"}],
        train={"exist_ok": False},  # Ultralytics' default: a new run gets a new numbered folder
    )
    run_dir = train_experiment(experiment)
    last = run_dir / "weights" / "last.pt"
    folders = sorted(run_dir.parent.iterdir())
    with pytest.raises(ValueError, match="already finished its 1 epochs: nothing to resume"):
        train_experiment(None, resume=str(last))
    assert sorted(run_dir.parent.iterdir()) == folders


def test_balance_after_a_gt_only_warm_up_survives_an_interruption(synthetic_data, teacher_checkpoint, tmp_path):
    """balance.start_epoch=1 of 2: epoch 1 trains on the GT loss alone (no balance yet, KD terms 0); a run stopped
    there resumes, measures the balance at the start of epoch 2 and distils from then on."""
    experiment = _experiment(
        synthetic_data,
        tmp_path,
        teacher_checkpoint("yolov8s.yaml"),
        distill=[{"loss": "bckd"}],
        balance={"start_epoch": 1},
        train={"epochs": 2, "val": False},
    )
    first = _stopped_after_first_save(experiment)
    assert first.balance is None and torch.load(kd_state_path(first.last), weights_only=True)["balance"] is None
    resumed = DistillationTrainer(None, overrides={"resume": str(first.last)})
    resumed.train()
    assert resumed.balance is not None and (resumed.save_dir / "kd_balance.json").is_file()
    first_epoch, second_epoch = read_results(resumed.save_dir)
    assert first_epoch["train/bckd_cls"] == 0 and second_epoch["train/bckd_cls"] > 0
    saved = torch.load(kd_state_path(resumed.last), weights_only=True)
    assert saved["balance"] == resumed.balance.to_dict()


def test_the_student_is_copied_with_the_criterion_installed(synthetic_data, calibrated_teacher, tmp_path):
    """CrossKD (stage hooks) for 2 epochs with no remove/reinstall around copies: the student has no hook between
    steps; Ultralytics' NaN recovery deep-copies it (criterion installed) into a plain EMA, then validation and
    saving carry on and the saved student is plain."""
    experiment = _experiment(
        synthetic_data, tmp_path, calibrated_teacher("yolov8s.yaml"), distill=[{"loss": "crosskd"}], train={"epochs": 2}
    )
    trainer = DistillationTrainer(experiment, overrides=experiment.train_args)
    hooked = []
    trainer.add_callback(
        "on_train_batch_end",
        lambda t: hooked.append(any(m._forward_hooks or m._forward_pre_hooks for m in t.model.modules())),
    )
    recovery = {}

    def nan_recovery(t):  # after epoch 2's steps, before its validation, as Ultralytics does on a NaN loss
        if t.epoch == 1:
            loss, t.loss = t.loss, torch.tensor(float("nan"))
            recovery["recovered"] = t._handle_nan_recovery(t.epoch)
            t.loss = loss
            recovery["criteria"] = type(t.ema.ema.criterion).__name__, type(t.model.criterion).__name__

    trainer.add_callback("on_train_epoch_end", nan_recovery)
    trainer.train()
    assert hooked and not any(hooked)
    assert recovery == {"recovered": True, "criteria": ("v8DetectionLoss", "DistillationCriterion")}
    first, second = read_results(trainer.save_dir)
    assert all(first[f"val/crosskd_{p}"] > 0 and second[f"val/crosskd_{p}"] > 0 for p in ("cls", "loc"))
    saved = torch.load(trainer.last, weights_only=False)["model"]
    assert saved.criterion is None and not any(m._forward_hooks for m in saved.modules())


def test_resume_keeps_the_fitted_crosskd_aligners(synthetic_data, teacher_checkpoint, tmp_path):
    """CrossKD's least-squares aligners are fitted once per run: a resumed run loads them as fitted and never refits
    (a refit would overwrite the trained weights with a fresh fit on the first resumed batch)."""
    experiment = _experiment(
        synthetic_data, tmp_path, teacher_checkpoint("yolov8s.yaml"), distill=[{"loss": "crosskd"}], train={"epochs": 2}
    )
    first = _stopped_after_first_save(experiment)
    saved = torch.load(kd_state_path(first.last), weights_only=True)["losses"]
    fitted_flags = [key for key in saved if key.endswith("aligners.box.fitted")]
    assert fitted_flags and all(bool(saved[key]) for key in fitted_flags)

    resumed = DistillationTrainer(None, overrides={"resume": str(first.last)})
    refits, seen = [], {}

    def watch(trainer):
        seen["losses"] = {key: value.clone() for key, value in trainer.distiller.losses.state_dict().items()}
        for module in trainer.distiller.losses.modules():
            if isinstance(module, FittedAligner):
                module.fit = lambda *args: refits.append(args)

    resumed.add_callback("on_train_start", watch)
    resumed.train()
    assert not refits
    for key, value in saved.items():
        assert torch.equal(seen["losses"][key], value), key
