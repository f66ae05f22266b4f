"""BCKD maths on small hand-made tensors (SPEC §1)."""

import math

import pytest
import torch
from loss_inputs import targets_for as _targets

from yolokd.losses.bckd import BCKDLoss, BCKDParams, bckd_cls_loss, bckd_loc_loss
from yolokd.views import HeadSpec, View

SPEC = HeadSpec("test head", 3, (8.0,), 16, ("one2many", "one2one"), (16,), {"box": 16, "cls": 16}, 2)


def _view(logits: torch.Tensor, boxes: torch.Tensor) -> View:
    batch, anchors, _ = logits.shape
    return View(
        feats=[torch.zeros(batch, 16, 1, anchors)],
        cls_logits=logits,
        box_output=torch.zeros(batch, anchors, 64),
        boxes=boxes,
        anchors=torch.zeros(anchors, 2),
        strides=torch.ones(anchors, 1),
        reg_max=16,
    )


def test_cls_known_value_and_gradient():
    """s = 0, σ(t) = 0.8: loss ln2 * 0.3 and dL/ds = -0.2632868 (the modulating factor is not detached)."""
    student = torch.zeros(1, 1, requires_grad=True)
    teacher = torch.logit(torch.tensor([[0.8]]))
    loss = bckd_cls_loss(student, teacher)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2) * 0.3, abs=1e-6)
    assert student.grad.item() == pytest.approx(-0.2632868, abs=1e-6)


def test_cls_zero_value_and_gradient_at_teacher():
    """Loss and gradient vanish when the student's logits equal the teacher's."""
    logits = torch.randn(5, 3, dtype=torch.float64)
    student = logits.clone().requires_grad_(True)
    loss = bckd_cls_loss(student, logits)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-12)


def test_cls_gradcheck_float64():
    """Analytic gradient matches finite differences away from the |.| kink."""
    student = torch.tensor([[0.3, -1.2], [2.0, 0.1]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[1.0, 0.5], [-1.0, 1.5]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: bckd_cls_loss(s, teacher), (student,))


def test_loc_known_value():
    """A half-overlapping pair: GIoU = 1/3, weight = max class gap 0.3 -> 0.3 * (1 - 1/3)."""
    student_boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0]], requires_grad=True)
    teacher_boxes = torch.tensor([[1.0, 0.0, 3.0, 1.0]])
    student_logits = torch.zeros(1, 2)
    teacher_logits = torch.logit(torch.tensor([[0.8, 0.6]]))
    loss = bckd_loc_loss(student_boxes, teacher_boxes, student_logits, teacher_logits)
    assert loss.item() == pytest.approx(0.3 * (1 - 1 / 3), abs=1e-6)


def test_loc_zero_for_identical_boxes():
    """Identical boxes give zero localisation loss whatever the weights."""
    boxes = torch.tensor([[1.0, 2.0, 5.0, 9.0], [0.0, 0.0, 3.0, 3.0]])
    loss = bckd_loc_loss(boxes.clone(), boxes, torch.randn(2, 4), torch.randn(2, 4))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_student_not_teacher():
    """Both terms give the student a gradient; teacher tensors never receive one."""
    student_logits = torch.randn(2, 6, 3, requires_grad=True)
    student_boxes = (torch.rand(2, 6, 4) * 10).sort(-1).values.requires_grad_(True)
    teacher_logits = torch.randn(2, 6, 3, requires_grad=True)
    teacher_boxes = (torch.rand(2, 6, 4) * 10).sort(-1).values.requires_grad_(True)
    loss = BCKDLoss(BCKDParams(), SPEC, SPEC)
    terms = loss(
        _view(student_logits, student_boxes),
        _view(teacher_logits, teacher_boxes),
        _targets(torch.ones(2, 6, dtype=torch.bool)),
    )
    sum(terms.values()).backward()
    assert student_logits.grad.abs().sum() > 0 and student_boxes.grad.abs().sum() > 0
    assert teacher_logits.grad is None and teacher_boxes.grad is None


def test_module_weights_and_normalisation():
    """Terms are weight * Σ / N_pos with the paper's weights, under names bckd_cls / bckd_loc."""
    student_logits, teacher_logits = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    student_boxes = torch.tensor([[[0.0, 0, 2, 2], [1, 1, 3, 4], [0, 0, 1, 1], [2, 2, 5, 5]]])
    teacher_boxes = student_boxes + 0.5
    fg_mask = torch.tensor([[True, True, False, False]])
    terms = BCKDLoss(BCKDParams(), SPEC, SPEC)(
        _view(student_logits, student_boxes), _view(teacher_logits, teacher_boxes), _targets(fg_mask)
    )
    expected_cls = bckd_cls_loss(student_logits[0], teacher_logits[0]) / 2
    expected_loc = 4.0 * bckd_loc_loss(student_boxes[0], teacher_boxes[0], student_logits[0], teacher_logits[0]) / 2
    assert set(terms) == {"bckd_cls", "bckd_loc"}
    assert terms["bckd_cls"].item() == pytest.approx(expected_cls.item(), rel=1e-6)
    assert terms["bckd_loc"].item() == pytest.approx(expected_loc.item(), rel=1e-6)


def test_empty_gt_batch_is_finite_with_gradient():
    """No positives (N_pos clamps to 1): terms stay finite and still give the student a gradient."""
    student_logits = torch.randn(2, 5, 3, requires_grad=True)
    boxes = torch.tensor([0.0, 0.0, 4.0, 4.0]).expand(2, 5, 4)
    terms = BCKDLoss(BCKDParams(), SPEC, SPEC)(
        _view(student_logits, boxes + 1),
        _view(torch.randn(2, 5, 3), boxes),
        _targets(torch.zeros(2, 5, dtype=torch.bool)),
    )
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total) and student_logits.grad.abs().sum() > 0


def test_one2one_branch_terms_are_suffixed():
    """Distilling the one2one branch logs bckd_cls_o2o / bckd_loc_o2o."""
    assert BCKDLoss(BCKDParams(branch="one2one"), SPEC, SPEC).term_names == ("bckd_cls_o2o", "bckd_loc_o2o")


def test_negative_weight_rejected():
    """A negative weight is a clear ValueError."""
    with pytest.raises(ValueError, match="cls_weight"):
        BCKDParams(cls_weight=-1.0)
