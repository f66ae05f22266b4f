"""Angle KD: sin² of the angle difference at the student's positives, weighted by the teacher's confidence."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from yolokd.losses.anglekd import AngleKDLoss, AngleKDParams, angle_kd_loss
from yolokd.views import HeadSpec, Targets, View

OBB_SPEC = HeadSpec("obb test head", 3, (8.0,), 16, ("one2many",), (8,), {"box": 8, "cls": 8}, 2, task="obb")
B, A = 2, 3


def obb_view(angles: torch.Tensor, cls_logits: torch.Tensor | None = None) -> View:
    """A View with (B, A, 1) angles; class logits 0 unless given; boxes unused."""
    return View(
        feats=[torch.zeros(B, 8, 1, 3)],
        cls_logits=torch.zeros(B, A, 3) if cls_logits is None else cls_logits,
        box_output=torch.zeros(B, A, 64),
        boxes=torch.zeros(B, A, 4),
        anchors=torch.zeros(A, 2),
        strides=torch.full((A, 1), 8.0),
        reg_max=16,
        angles=angles,
        rboxes=torch.zeros(B, A, 5),
    )


def targets_for(fg_mask: torch.Tensor) -> Targets:
    return Targets(
        fg_mask=fg_mask,
        gt_index=torch.zeros(B, A, dtype=torch.long),
        target_boxes=torch.zeros(B, A, 4),
        gt_boxes=torch.zeros(B, 0, 4),
        gt_labels=torch.zeros(B, 0, dtype=torch.long),
        gt_mask=torch.zeros(B, 0, dtype=torch.bool),
        image_size=torch.tensor([8.0, 24.0]),
    )


def test_known_value_and_gradient():
    """θ_s = 0, θ_t = π/6: sin²(-π/6) = 0.25, d/dθ_s = sin(2 · (-π/6)) = -0.8660254."""
    student = torch.zeros(1, requires_grad=True)
    loss = angle_kd_loss(student, torch.tensor([math.pi / 6]))
    torch.testing.assert_close(loss, torch.tensor([0.25]))
    (grad,) = torch.autograd.grad(loss.sum(), student)
    torch.testing.assert_close(grad, torch.tensor([-math.sqrt(3) / 2]))


def test_zero_at_equal_angles_and_period_pi():
    """0 with zero gradient at θ_s == θ_t, and 0 again at θ_s = θ_t + π (the same box)."""
    teacher = torch.tensor([0.3, -0.7, 2.0])
    student = teacher.clone().requires_grad_()
    loss = angle_kd_loss(student, teacher)
    assert float(loss.detach().abs().max()) < 1e-12
    (grad,) = torch.autograd.grad(loss.sum(), student)
    assert float(grad.abs().max()) < 1e-6
    torch.testing.assert_close(angle_kd_loss(teacher + math.pi, teacher), torch.zeros(3), atol=1e-6, rtol=0)


def test_module_weights_positives_by_teacher_confidence():
    """angle = weight · Σ_pos σ(max_c t) · sin²(Δθ) / N_pos; negatives and the student's scores do not count."""
    student_angles = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])[..., None]
    teacher_angles = torch.tensor([[math.pi / 6, 1.0, math.pi / 2], [math.pi / 4, 0.0, 0.0]])[..., None]
    teacher_logits = torch.zeros(B, A, 3)
    teacher_logits[0, 2, 1] = math.log(3.0)  # σ = 0.75 at (0, 2)
    fg_mask = torch.tensor([[True, False, True], [True, False, False]])
    loss = AngleKDLoss(AngleKDParams(weight=2.0), OBB_SPEC, OBB_SPEC)
    student = obb_view(student_angles, cls_logits=torch.randn(B, A, 3))
    got = loss(student, obb_view(teacher_angles, teacher_logits), targets_for(fg_mask))["anglekd_angle"]
    expected = 2.0 * (0.5 * 0.25 + 0.75 * 1.0 + 0.5 * 0.5) / 3
    torch.testing.assert_close(got, torch.tensor(expected))


def test_gradient_reaches_the_student_only_and_empty_batches_stay_finite():
    """Student angles get a gradient, teacher angles none; no positives gives an exact 0."""
    student = obb_view(torch.randn(B, A, 1, requires_grad=True))
    teacher = obb_view(torch.randn(B, A, 1))
    loss = AngleKDLoss(AngleKDParams(), OBB_SPEC, OBB_SPEC)
    loss(student, teacher, targets_for(torch.ones(B, A, dtype=torch.bool)))["anglekd_angle"].backward()
    assert student.angles.grad.abs().sum() > 0 and teacher.angles.grad is None
    empty = loss(student, teacher, targets_for(torch.zeros(B, A, dtype=torch.bool)))["anglekd_angle"]
    assert float(empty) == 0.0


def test_heads_without_angles_are_refused():
    """A detect (or segment) teacher or student is refused when the run is built."""
    detect = replace(OBB_SPEC, task="detect")
    with pytest.raises(ValueError, match="loss 'anglekd' distils box angles, but the student is a detect model"):
        AngleKDLoss(AngleKDParams(), OBB_SPEC, detect)
