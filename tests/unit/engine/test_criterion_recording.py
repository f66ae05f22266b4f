"""DistillationCriterion stays installed safely: the student's stages are recorded inside recording() only, and a
student carrying the criterion deep-copies and pickles as a plain Ultralytics student (EMA, checkpoints, NaN
recovery need no remove/reinstall)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.loss import E2ELoss, v8DetectionLoss

from yolokd.config import LossEntry
from yolokd.engine.criterion import DistillationCriterion
from yolokd.engine.distiller import Distiller
from yolokd.losses.bckd import BCKDParams
from yolokd.losses.crosskd import CrossKDParams

NAMES = {0: "a", 1: "b", 2: "c"}
CPU = torch.device("cpu")


def _model(model_yaml: str, seed: int) -> DetectionModel:
    torch.manual_seed(seed)
    model = DetectionModel(model_yaml, nc=len(NAMES), verbose=False)
    model.names = dict(NAMES)
    model.args = get_cfg(overrides={"epochs": 10})
    return model


def _student_with_criterion(model_yaml: str = "yolov8n.yaml") -> tuple[DetectionModel, DistillationCriterion]:
    """A training student whose criterion is yolokd's, with CrossKD (stage hooks) and BCKD on a frozen teacher."""
    teacher = _model(model_yaml, seed=1).eval().requires_grad_(False)
    student = _model(model_yaml, seed=0).train()
    entries = [LossEntry("crosskd", CrossKDParams()), LossEntry("bckd", BCKDParams())]
    criterion = DistillationCriterion(student.init_criterion(), student, Distiller(teacher, student, entries, CPU))
    student.criterion = criterion
    return student, criterion


def _batch() -> dict[str, torch.Tensor]:
    return {
        "img": torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
        "batch_idx": torch.tensor([0.0, 1.0]),
        "cls": torch.tensor([[1.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.2]]),
    }


def _has_hooks(model: torch.nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _assert_plain_copy(copied: DetectionModel, student: DetectionModel, base_type: type) -> None:
    """Same weights, Ultralytics' own criterion type, no hook, no teacher or KD module inside."""
    assert type(copied.criterion) is base_type
    assert not _has_hooks(copied)
    assert copied.state_dict().keys() == student.state_dict().keys()
    student_state = student.state_dict()
    assert all(torch.equal(tensor, student_state[name]) for name, tensor in copied.state_dict().items())


@pytest.mark.parametrize(("model_yaml", "base_type"), [("yolov8n.yaml", v8DetectionLoss), ("yolo26n.yaml", E2ELoss)])
def test_a_student_with_the_criterion_deep_copies_and_pickles_as_a_plain_student(model_yaml, base_type):
    """deepcopy (Ultralytics' EMA) and pickle/torch.save (checkpoints) give the student with its plain criterion."""
    student, criterion = _student_with_criterion(model_yaml)
    criterion.update()  # E2ELoss: o2m 0.8 -> 0.72, a state the copy keeps
    _assert_plain_copy(copy.deepcopy(student), student, base_type)
    restored = pickle.loads(pickle.dumps(student))
    _assert_plain_copy(restored, student, base_type)
    buffer = io.BytesIO()
    torch.save({"model": student}, buffer)
    assert b"yolokd" not in buffer.getvalue()  # loads with Ultralytics alone
    if base_type is E2ELoss:
        assert restored.criterion.o2m == criterion.base.o2m != criterion.base.o2m_copy
    assert student.criterion is criterion  # the original keeps yolokd's criterion


def test_copies_taken_inside_a_step_work_too():
    """Mid-step (hooks on, stages recorded with a graph) the student still deep-copies and pickles, as a plain
    student whose copied hooks record nothing; the step itself is unaffected."""
    student, criterion = _student_with_criterion()
    batch = _batch()
    with criterion.recording():
        preds = student(batch["img"])
        copied = copy.deepcopy(student)
        restored = pickle.loads(pickle.dumps(student))
        total, _ = criterion(preds, batch)
    total.backward()
    for other in (copied, restored):
        assert type(other.criterion) is v8DetectionLoss
        other(batch["img"])
        assert not any(hook.store for m in other.modules() for hook in m._forward_hooks.values())


def test_stages_are_recorded_inside_recording_only():
    """A recorded step leaves no hook on the student; a stage-reading loss outside recording() says how to fix it."""
    student, criterion = _student_with_criterion()
    batch = _batch()
    assert not _has_hooks(student)
    with criterion.recording():
        assert _has_hooks(student)
        total, items = criterion(student(batch["img"]), batch)
    assert not _has_hooks(student) and torch.isfinite(total)
    assert {"crosskd_cls", "crosskd_loc", "bckd_cls", "bckd_loc"} <= items.keys()
    with pytest.raises(RuntimeError, match=r"inside recording\(\)"):
        criterion(student(batch["img"]), batch)


def test_recording_twice_gives_the_same_terms():
    """Hooks registered per recording record the same stage outputs as before: same KD terms on the same batch."""
    student, criterion = _student_with_criterion()
    batch = _batch()
    terms = []
    for _ in range(2):
        with torch.no_grad(), criterion.recording():
            terms.append(criterion.loss_parts(student(batch["img"]), batch)[1])
    assert all(torch.equal(terms[0][name], terms[1][name]) for name in terms[0])
