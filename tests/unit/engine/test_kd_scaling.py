"""How the criterion and the distiller scale KD terms: frozen balance scales, and one2many KD following the
decaying one2many loss weight of YOLO26/YOLOv10 heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel, load_checkpoint

from yolokd.config import LossEntry
from yolokd.engine.criterion import DistillationCriterion, student_loss_and_targets
from yolokd.engine.distiller import Distiller
from yolokd.heads import StageRecorder
from yolokd.losses.bckd import BCKDParams
from yolokd.losses.mimic import MimicParams


class StubDistiller:
    """One term per branch, each exactly 1.0, so the criterion's factors are read off directly."""

    term_names = ("bckd_cls", "bckd_cls_o2o")
    branches = ("one2many", "one2one")
    device = torch.device("cpu")

    def term_branches(self):
        return {"bckd_cls": "one2many", "bckd_cls_o2o": "one2one"}

    def recorder_for(self, adapter):
        return StageRecorder(adapter, (), ())

    def __call__(self, student_views, images, targets):
        return dict.fromkeys(self.term_names, torch.tensor(1.0))


@pytest.fixture(scope="module")
def yolo26():
    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=3, verbose=False)
    model.args = get_cfg(overrides={"epochs": 10})
    return model


def _terms(criterion: DistillationCriterion, model: nn.Module) -> dict[str, float]:
    raw = criterion.adapter.split_branches(model.train()(torch.zeros(1, 3, 64, 64)))
    return {k: float(v) for k, v in criterion._kd_terms(raw, torch.zeros(1, 3, 64, 64), {}).items()}


def test_one2many_kd_follows_the_decaying_one2many_weight(yolo26):
    base = yolo26.init_criterion()
    criterion = DistillationCriterion(base, yolo26, StubDistiller())
    assert _terms(criterion, yolo26) == {"bckd_cls": 1.0, "bckd_cls_o2o": 1.0}  # o2m at its initial 0.8
    base.o2m = base.o2m_copy / 4  # late in training, e.g. 0.8 -> 0.2
    criterion.kd_factor = 0.5
    assert _terms(criterion, yolo26) == {"bckd_cls": 0.125, "bckd_cls_o2o": 0.5}


def test_o2m_decay_can_be_switched_off(yolo26):
    base = yolo26.init_criterion()
    base.o2m = base.o2m_copy / 4
    criterion = DistillationCriterion(base, yolo26, StubDistiller(), follow_o2m_decay=False)
    assert _terms(criterion, yolo26) == {"bckd_cls": 1.0, "bckd_cls_o2o": 1.0}


def test_distiller_multiplies_each_method_by_its_frozen_scale(calibrated_teacher):
    """Scale 1 (paper mode) returns the loss modules' own terms unchanged; another scale multiplies them exactly."""
    teacher, _ = load_checkpoint(calibrated_teacher("yolov8s.yaml"), device="cpu")
    teacher.float().eval().requires_grad_(False)
    torch.manual_seed(0)
    student = DetectionModel("yolov8n.yaml", nc=len(teacher.names), verbose=False).train()
    student.args = get_cfg()  # the loss gains (box, cls, dfl) Ultralytics' criterion reads
    entries = [LossEntry("bckd", BCKDParams()), LossEntry("mimic", MimicParams())]
    distiller = Distiller(teacher, student, entries, torch.device("cpu"))
    criterion = DistillationCriterion(student.init_criterion(), student, distiller)
    images = torch.rand(2, 3, 64, 64)
    batch = {"img": images, "batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[1.0], [2.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.2, 0.2]])}  # fmt: skip
    preds = student(images)
    _, paper_terms = criterion.loss_parts(preds, batch)
    raw = criterion.adapter.split_branches(preds)
    _, _, targets = student_loss_and_targets(criterion.base, preds, batch)
    views = {"one2many": criterion.adapter.build_view(raw["one2many"])}
    teacher_views = distiller.teacher_views(images)
    direct = {}
    for loss in distiller.losses.values():
        direct.update(loss(views["one2many"], teacher_views["one2many"], targets["one2many"]))
    assert {k: float(v) for k, v in paper_terms.items()} == pytest.approx({k: float(v) for k, v in direct.items()})
    distiller.scales = {"bckd_cls_bckd_loc": 3.0, "mimic_feat": 0.25}
    _, scaled = criterion.loss_parts(preds, batch)
    assert float(scaled["bckd_cls"]) == pytest.approx(3.0 * float(paper_terms["bckd_cls"]), rel=1e-6)
    assert float(scaled["bckd_loc"]) == pytest.approx(3.0 * float(paper_terms["bckd_loc"]), rel=1e-6)
    assert float(scaled["mimic_feat"]) == pytest.approx(0.25 * float(paper_terms["mimic_feat"]), rel=1e-6)
