"""OBB adaptations of the box-reading methods: enclosing boxes, BCKD's ProbIoU loc term, PGD's ProbIoU quality and
rotated inside test."""

from __future__ import annotations

import math

import torch
from ultralytics.utils.metrics import probiou

from yolokd.losses.bckd import bckd_rotated_loc_loss
from yolokd.losses.masks import points_in_boxes
from yolokd.losses.pgd_masks import _gt_scores_and_ious
from yolokd.views import enclosing_boxes


def test_enclosing_box_of_a_turned_rectangle():
    """A 4x2 box turned by 90 deg encloses as 2x4; a square turned by 45 deg has half side s/√2."""
    boxes = torch.tensor([[10.0, 20.0, 4.0, 2.0, math.pi / 2], [0.0, 0.0, 2.0, 2.0, math.pi / 4]])
    expected = torch.tensor([[9.0, 18.0, 11.0, 22.0], [-math.sqrt(2), -math.sqrt(2), math.sqrt(2), math.sqrt(2)]])
    torch.testing.assert_close(enclosing_boxes(boxes), expected)


def test_bckd_rotated_loc_is_one_minus_probiou_and_counts_the_angle():
    """Σ w (1 - ProbIoU): ~0 for equal boxes or boxes turned by π, > 0 for a 4x1 box turned by π/4 (angle counts)."""
    logits_s, logits_t = torch.zeros(3, 2), torch.zeros(3, 2)
    logits_t[:, 0] = math.log(3.0)  # weight max_c |σ(t) - σ(s)| = 0.25
    teacher = torch.tensor([[8.0, 8.0, 4.0, 1.0, 0.2]]).repeat(3, 1)
    student = teacher.clone()
    student[1, 4] += math.pi
    student[2, 4] += math.pi / 4
    per_box = [
        float(bckd_rotated_loc_loss(student[i : i + 1], teacher[i : i + 1], logits_s[:1], logits_t[:1]))
        for i in range(3)
    ]
    assert per_box[0] < 1e-3 and per_box[1] < 1e-3 and per_box[2] > 0.05
    expected = 0.25 * (1 - probiou(teacher, student).squeeze(-1)).sum()
    torch.testing.assert_close(bckd_rotated_loc_loss(student, teacher, logits_s, logits_t), expected)


def test_bckd_rotated_loc_gradient_reaches_the_student_only():
    """The student's boxes get a gradient (centre, size and angle); the teacher's none."""
    student = torch.tensor([[8.0, 8.0, 4.0, 1.0, 0.2]], requires_grad=True)
    teacher = torch.tensor([[9.0, 7.0, 3.0, 2.0, 0.6]], requires_grad=True)
    bckd_rotated_loc_loss(student, teacher, torch.zeros(1, 2), torch.ones(1, 2)).backward()
    assert (student.grad.abs() > 0).all() and teacher.grad is None


def test_points_in_rotated_boxes_tests_in_the_boxes_frame():
    """A 10x2 box along the diagonal holds points on the diagonal, not the enclosing box's corners."""
    box = torch.tensor([[[0.0, 0.0, 10.0, 2.0, math.pi / 4]]])
    points = torch.tensor([[3.0, 3.0], [-3.0, -3.0], [3.0, -3.0], [0.5, 0.0]])
    inside = points_in_boxes(points, box, torch.ones(1, 1, dtype=torch.bool))
    assert inside.tolist() == [[[True, True, False, True]]]
    assert not points_in_boxes(points, box, torch.zeros(1, 1, dtype=torch.bool)).any()


def test_pgd_quality_uses_probiou_for_rotated_boxes():
    """(B, M, A) IoUs of rotated GT and teacher boxes equal ProbIoU pair by pair (loop oracle)."""
    torch.manual_seed(0)
    gt = torch.cat((torch.rand(2, 3, 2) * 32, torch.rand(2, 3, 2) * 8 + 1, torch.rand(2, 3, 1)), -1)
    teacher = torch.cat((torch.rand(2, 5, 2) * 32, torch.rand(2, 5, 2) * 8 + 1, torch.rand(2, 5, 1)), -1)
    _, ious = _gt_scores_and_ious(torch.rand(2, 5, 4), teacher, gt, torch.zeros(2, 3, dtype=torch.long))
    for b in range(2):
        for m in range(3):
            for a in range(5):
                expected = probiou(gt[b, m][None], teacher[b, a][None]).clamp(min=0)
                torch.testing.assert_close(ious[b, m, a], expected[0, 0])
