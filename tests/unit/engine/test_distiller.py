"""Distiller: loading a frozen teacher, class checks, the loss modules it builds, and the teacher views it returns."""

from __future__ import annotations

import pytest
import torch
from conftest import save_untrained_checkpoint
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel

from yolokd.config import LossEntry
from yolokd.engine.criterion import DistillationCriterion
from yolokd.engine.distiller import Distiller, check_teacher_classes, load_teacher
from yolokd.losses.bckd import BCKDParams
from yolokd.losses.crosskd import CrossKDParams
from yolokd.losses.mimic import MimicParams

NAMES = {0: "a", 1: "b", 2: "c"}
CPU = torch.device("cpu")


def model(model_yaml: str, seed: int = 0) -> DetectionModel:
    torch.manual_seed(seed)
    built = DetectionModel(model_yaml, nc=len(NAMES), verbose=False)
    built.names = dict(NAMES)
    built.args = get_cfg()
    return built


def frozen(model_yaml: str) -> DetectionModel:
    return model(model_yaml, seed=1).eval().requires_grad_(False)


def test_load_teacher_gives_a_frozen_model_in_eval_mode(tmp_path):
    """A trained checkpoint loads as a float teacher in eval mode whose parameters need no gradient."""
    path = save_untrained_checkpoint("yolov8n.yaml", NAMES, tmp_path / "teacher.pt")
    teacher = load_teacher(path, CPU)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert teacher.names == NAMES


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("teacher.yaml", ValueError, r"must be a trained checkpoint \(\.pt\).*random weights"),
        ("missing/teacher.pt", FileNotFoundError, r"teacher checkpoint not found: '.*missing/teacher\.pt'"),
    ],
)
def test_load_teacher_refuses_a_yaml_and_a_missing_file(name, error, message, tmp_path):
    """A model YAML or a path to nothing is a clear error naming the path."""
    with pytest.raises(error, match=message):
        load_teacher(tmp_path / name, CPU)


def test_load_teacher_refuses_a_damaged_file(tmp_path):
    """Bytes that are no checkpoint -> one RuntimeError saying the file could not be read."""
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"could not be read .*corrupt"):
        load_teacher(broken, CPU)


def test_check_teacher_classes():
    """Same class list passes; another count or other names (in order) is refused, listing both."""
    check_teacher_classes({1: "b", 0: "a"}, {0: "a", 1: "b"})  # dict order does not matter, indices do
    with pytest.raises(ValueError, match=r"teacher 3 classes \['a', 'b', 'c'\], data 2 classes \['a', 'b'\]"):
        check_teacher_classes(NAMES, {0: "a", 1: "b"})
    with pytest.raises(ValueError, match="other classes than the dataset"):
        check_teacher_classes({0: "a", 1: "b"}, {0: "b", 1: "a"})


def test_losses_terms_and_branches_in_config_order():
    """One loss module per entry (keyed by its terms), term names in config order, each tied to its branch."""
    entries = [LossEntry("bckd", BCKDParams()), LossEntry("bckd", BCKDParams(branch="one2one"))]
    distiller = Distiller(frozen("yolo26s.yaml"), model("yolo26n.yaml"), entries, CPU)
    assert list(distiller.losses) == ["bckd_cls_bckd_loc", "bckd_cls_o2o_bckd_loc_o2o"]
    assert distiller.term_names == ("bckd_cls", "bckd_loc", "bckd_cls_o2o", "bckd_loc_o2o")
    assert distiller.term_branches()["bckd_loc_o2o"] == "one2one" and distiller.branches == ("one2many", "one2one")
    assert distiller.scales == {"bckd_cls_bckd_loc": 1.0, "bckd_cls_o2o_bckd_loc_o2o": 1.0}


def test_stage_hooks_only_for_the_branches_and_parts_losses_read():
    """CrossKD (stage 1) on one2many + BCKD on one2one: one2many's pre-activations are recorded, one2one's stages
    not; with no stage-reading loss at all nothing is recorded."""
    entries = [LossEntry("crosskd", CrossKDParams()), LossEntry("bckd", BCKDParams(branch="one2one"))]
    distiller = Distiller(frozen("yolo26s.yaml"), model("yolo26n.yaml"), entries, CPU)
    assert distiller.stage_request() == (("one2many",), ("box_preact", "cls_preact"))
    views = distiller.teacher_views(torch.rand(1, 3, 64, 64))
    assert list(views["one2many"].stages) == ["box_preact", "cls_preact"] and views["one2one"].stages == {}
    plain = Distiller(frozen("yolov8s.yaml"), model("yolov8n.yaml"), [LossEntry("bckd", BCKDParams())], CPU)
    assert plain.stage_request() == ((), ()) and plain.teacher_views(torch.rand(1, 3, 64, 64))["one2many"].stages == {}


def test_the_teacher_records_inside_its_forward_only():
    """After teacher_views the teacher carries no hook (its recording ended with its forward) and holds no tensor."""
    teacher = frozen("yolov8s.yaml")
    distiller = Distiller(teacher, model("yolov8n.yaml"), [LossEntry("crosskd", CrossKDParams())], CPU)
    views = distiller.teacher_views(torch.rand(1, 3, 64, 64))
    assert [len(levels) for levels in views["one2many"].stages["box_preact"]] == [3, 3]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in teacher.modules())
    assert not distiller.teacher_recorder.store


def test_mismatched_pair_is_refused_when_built():
    """A teacher with another class count than the student stops the build, not a training step."""
    teacher = DetectionModel("yolov8s.yaml", nc=5, verbose=False).eval()
    with pytest.raises(ValueError, match="teacher predicts 5 classes but the student predicts 3"):
        Distiller(teacher, model("yolov8n.yaml"), [LossEntry("bckd", BCKDParams())], CPU)


def test_teacher_views_are_detached_and_leave_the_teacher_unchanged():
    """Teacher views hold no graph; a step's backward gives the student and the aligners gradients, the teacher none,
    and the teacher's BatchNorm statistics do not move (it runs in eval mode)."""
    teacher, student = frozen("yolov8s.yaml"), model("yolov8n.yaml").train()
    entries = [LossEntry("bckd", BCKDParams()), LossEntry("mimic", MimicParams())]
    distiller = Distiller(teacher, student, entries, CPU)
    images = torch.rand(2, 3, 64, 64)
    views = distiller.teacher_views(images)
    assert list(views) == ["one2many"]
    assert not any(t.requires_grad for t in (views["one2many"].cls_logits, views["one2many"].boxes))
    stats = {name: buffer.clone() for name, buffer in teacher.named_buffers()}
    criterion = DistillationCriterion(student.init_criterion(), student, distiller)
    batch = {"img": images, "batch_idx": torch.tensor([0.0]), "cls": torch.tensor([[1.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}  # fmt: skip
    criterion(student(images), batch)[0].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in distiller.losses.parameters())  # mimic's aligner (64 -> 128 channels)
    assert all(torch.equal(buffer, stats[name]) for name, buffer in teacher.named_buffers())
    assert not teacher.training
