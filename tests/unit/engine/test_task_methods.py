"""Every distillation method runs on the detection part of segment, pose and OBB heads (YOLOv8 and YOLO26), next to
the task's own KD term: one criterion step per task with every method, each term finite and > 0 with a gradient on the
student."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import save_untrained_checkpoint
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import OBBModel, PoseModel, SegmentationModel

from yolokd.config import LossEntry
from yolokd.data.synthetic import KEYPOINT_SHAPE
from yolokd.engine.criterion import DistillationCriterion
from yolokd.engine.distiller import Distiller, load_teacher
from yolokd.losses import LOSSES

NAMES = {0: "a", 1: "b", 2: "c"}
TASK_TERMS = {"segment": "maskkd", "pose": "kptkd", "obb": "anglekd"}
DETECTION_METHODS = [name for name in LOSSES if name not in TASK_TERMS.values()]
HEAD_METHODS = ["bckd", "crosskd", "pgd", "fgd", "gdetkd"]  # read boxes, scores or head stages (not only the neck)
TASKS = {
    "segment": (SegmentationModel, "yolov8n-seg.yaml", "yolov8s-seg.yaml"),
    "pose": (PoseModel, "yolov8n-pose.yaml", "yolov8s-pose.yaml"),
    "obb": (OBBModel, "yolov8n-obb.yaml", "yolov8s-obb.yaml"),
}
YOLO26_TASKS = {
    "segment": (SegmentationModel, "yolo26n-seg.yaml", "yolo26s-seg.yaml"),
    "pose": (PoseModel, "yolo26n-pose.yaml", "yolo26s-pose.yaml"),
    "obb": (OBBModel, "yolo26n-obb.yaml", "yolo26s-obb.yaml"),
}


def task_batch(task: str) -> dict[str, torch.Tensor]:
    """Two 64 px images, three objects (normalised xywh; OBB xywhr), with the task's labels."""
    torch.manual_seed(1)
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.3, 0.2], [0.6, 0.4, 0.3, 0.3]])
    batch = {
        "img": torch.rand(2, 3, 64, 64),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[1.0], [0.0], [2.0]]),
    }
    if task == "obb":
        boxes = torch.cat((boxes, torch.tensor([[0.3], [0.0], [1.2]])), 1)
    if task == "segment":  # overlap format: pixel = 1-based instance index in its image, 1/4 resolution
        masks = torch.zeros(2, 16, 16)
        masks[0, 5:11, 5:11], masks[0, 3:6, 3:7], masks[1, 5:10, 7:12] = 1, 2, 1
        batch["masks"] = masks
        classes = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]])  # per image: class of instance 0 (none), 1, 2
        batch["sem_masks"] = classes.gather(1, masks.long().flatten(1)).view(2, 16, 16)  # Segment26's semantic target
    if task == "pose":
        corners = boxes[:, None, :2] + torch.tensor([[-0.1, 0.0], [0.0, -0.1], [0.1, 0.0], [0.0, 0.1]])
        batch["keypoints"] = torch.cat((corners, torch.full((3, 4, 1), 2.0)), -1)
    batch["bboxes"] = boxes
    return batch


def check_every_term(task: str, tasks: dict, entries: list[LossEntry], tmp_path) -> None:
    """One criterion call with ``entries`` on the task's pair: every term finite and > 0, the student's parameters get
    a finite gradient from the KD terms alone, the teacher's none."""
    model_class, student_yaml, teacher_yaml = tasks[task]
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    teacher = load_teacher(
        save_untrained_checkpoint(teacher_yaml, NAMES, tmp_path / "teacher.pt", calibration_images=images),
        torch.device("cpu"),
    )
    torch.manual_seed(0)
    extra = {"data_kpt_shape": KEYPOINT_SHAPE} if task == "pose" else {}
    student = model_class(student_yaml, nc=len(NAMES), verbose=False, **extra).train()
    student.names, student.args = dict(NAMES), get_cfg()
    distiller = Distiller(teacher, student, entries, torch.device("cpu"))
    criterion = DistillationCriterion(student.init_criterion(), student, distiller)
    batch = task_batch(task)
    with criterion.recording():
        _, terms = criterion.loss_parts(student(batch["img"]), batch)
    assert set(terms) == set(distiller.term_names) and any(n.startswith(TASK_TERMS[task]) for n in terms)
    for name, value in terms.items():
        assert math.isfinite(float(value.detach())) and float(value.detach()) > 0, name
    params = [p for p in student.parameters() if p.requires_grad]
    grads = torch.autograd.grad(torch.stack(list(terms.values())).sum(), params, allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert all(bool(torch.isfinite(g).all()) for g in grads if g is not None)
    assert not any(p.grad is not None for p in teacher.parameters())


@pytest.mark.parametrize("task", list(TASKS))
def test_every_method_runs_on_the_task_head(task, tmp_path):
    """YOLOv8 task heads: all detection methods + the task's term in one criterion call."""
    names = [*DETECTION_METHODS, TASK_TERMS[task]]
    check_every_term(task, TASKS, [LossEntry(n, LOSSES[n].Params()) for n in names], tmp_path)


@pytest.mark.parametrize("task", list(YOLO26_TASKS))
def test_every_method_runs_on_both_branches_of_the_yolo26_task_head(task, tmp_path):
    """YOLO26 task heads (Segment26, Pose26, OBB26; reg_max=1, one2many + one2one): the methods that read the head's
    boxes, scores and stages (LD refuses reg_max=1; the feature-only methods read the neck, as on detect) + the task's
    term on one2many, and bckd + the task's term on one2one."""
    one2many = [*HEAD_METHODS, TASK_TERMS[task]]
    entries = [LossEntry(n, LOSSES[n].Params()) for n in one2many]
    entries += [LossEntry(n, LOSSES[n].Params(branch="one2one")) for n in ("bckd", TASK_TERMS[task])]
    check_every_term(task, YOLO26_TASKS, entries, tmp_path)
