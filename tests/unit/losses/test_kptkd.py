"""Keypoint KD: OKS-form location weighted by the teacher's visibility, and visibility KL, at student positives."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from yolokd.losses.kptkd import (
    KeypointKDLoss,
    KeypointKDParams,
    keypoint_location_kd,
    keypoint_sigmas,
    keypoint_visibility_kd,
)
from yolokd.views import HeadSpec, Targets, View

POSE = HeadSpec(
    "pose test head", 3, (8.0,), 16, ("one2many",), (8,), {"box": 8, "cls": 8}, 2, task="pose", keypoint_shape=(2, 3)
)
B, A, K = 2, 3, 2


def pose_view(keypoints: torch.Tensor, visibility: torch.Tensor | None) -> View:
    return View(
        feats=[torch.zeros(B, 8, 1, 3)],
        cls_logits=torch.zeros(B, A, 3),
        box_output=torch.zeros(B, A, 64),
        boxes=torch.zeros(B, A, 4),
        anchors=torch.zeros(A, 2),
        strides=torch.full((A, 1), 8.0),
        reg_max=16,
        keypoints=keypoints,
        keypoint_visibility=visibility,
    )


def pose_targets(fg_mask: torch.Tensor, box_size: float = 10.0) -> Targets:
    """Targets whose assigned boxes are box_size x box_size pixels (area box_size²)."""
    return Targets(
        fg_mask=fg_mask,
        gt_index=torch.zeros(B, A, dtype=torch.long),
        target_boxes=torch.tensor([0.0, 0.0, box_size, box_size]).expand(B, A, 4),
        gt_boxes=torch.zeros(B, 0, 4),
        gt_labels=torch.zeros(B, 0, dtype=torch.long),
        gt_mask=torch.zeros(B, 0, dtype=torch.bool),
        image_size=torch.tensor([8.0, 24.0]),
    )


def test_location_known_value():
    """d² = 25 px², area 100, σ = 0.5: e = 25 / (1 · 100 · 2) = 0.125; visibilities 1 and 0 -> 1 - exp(-0.125)."""
    student = torch.tensor([[[3.0, 4.0], [50.0, 50.0]]])
    teacher = torch.zeros(1, 2, 2)
    loss = keypoint_location_kd(
        student, teacher, torch.tensor([[1.0, 0.0]]), torch.tensor([100.0]), torch.full((2,), 0.5)
    )
    torch.testing.assert_close(loss, torch.tensor([1 - math.exp(-0.125)]))


def test_visibility_known_value_and_zero_at_equality():
    """Student logit 0, teacher σ = 0.8: 0.8 ln 1.6 + 0.2 ln 0.4 = 0.1927448; equal logits give 0 and no gradient."""
    loss = keypoint_visibility_kd(torch.zeros(1, 2), torch.full((1, 2), math.log(4.0)))
    torch.testing.assert_close(loss, torch.tensor([0.8 * math.log(1.6) + 0.2 * math.log(0.4)]))
    logits = torch.randn(3, 2)
    student = logits.clone().requires_grad_()
    same = keypoint_visibility_kd(student, logits)
    (grad,) = torch.autograd.grad(same.sum(), student)
    assert float(same.detach().abs().max()) < 1e-6 and float(grad.abs().max()) < 1e-6


def test_sigmas_follow_ultralytics():
    """COCO's OKS sigmas for (17, 3) keypoints, 1/K otherwise."""
    assert keypoint_sigmas(17, 3)[0] == pytest.approx(0.026) and torch.equal(
        keypoint_sigmas(4, 3), torch.full((4,), 0.25)
    )


def test_module_matches_a_loop_over_positives():
    """kptkd_loc / kptkd_vis = weight · Σ_pos per-anchor term / N_pos; negatives do not count."""
    torch.manual_seed(0)
    student = pose_view(torch.randn(B, A, K, 2) * 4, torch.randn(B, A, K))
    teacher = pose_view(torch.randn(B, A, K, 2) * 4, torch.randn(B, A, K))
    fg_mask = torch.tensor([[True, False, True], [False, True, False]])
    terms = KeypointKDLoss(KeypointKDParams(loc_weight=2.0, vis_weight=3.0), POSE, POSE)(
        student, teacher, pose_targets(fg_mask)
    )
    sigmas = torch.full((K,), 0.5)
    loc = vis = 0.0
    for b, a in fg_mask.nonzero().tolist():
        weight = teacher.keypoint_visibility[b, a].sigmoid()
        d2 = (student.keypoints[b, a] - teacher.keypoints[b, a]).square().sum(-1)
        loc += float((weight * (1 - torch.exp(-d2 / (8 * sigmas**2 * 100.0)))).sum() / weight.sum())
        vis += float(
            keypoint_visibility_kd(student.keypoint_visibility[b, a][None], teacher.keypoint_visibility[b, a][None])
        )
    torch.testing.assert_close(terms["kptkd_loc"], torch.tensor(2.0 * loc / 3))
    torch.testing.assert_close(terms["kptkd_vis"], torch.tensor(3.0 * vis / 3))


def test_zero_at_student_equal_teacher_and_gradients_reach_the_student_only():
    """Student == teacher gives 0 for both terms; else keypoints and visibility get a gradient, the teacher none."""
    torch.manual_seed(1)
    keypoints, visibility = torch.randn(B, A, K, 2), torch.randn(B, A, K)
    loss = KeypointKDLoss(KeypointKDParams(), POSE, POSE)
    targets = pose_targets(torch.ones(B, A, dtype=torch.bool))
    same = loss(pose_view(keypoints, visibility), pose_view(keypoints, visibility), targets)
    assert all(float(term.abs()) < 1e-6 for term in same.values())
    student = pose_view(torch.randn(B, A, K, 2, requires_grad=True), torch.randn(B, A, K, requires_grad=True))
    teacher = pose_view(keypoints.requires_grad_(), visibility)
    sum(loss(student, teacher, targets).values()).backward()
    assert student.keypoints.grad.abs().sum() > 0 and student.keypoint_visibility.grad.abs().sum() > 0
    assert teacher.keypoints.grad is None


def test_no_positives_stays_finite_and_zero():
    """A batch without positives gives exact, finite zeros."""
    loss = KeypointKDLoss(KeypointKDParams(), POSE, POSE)
    view = pose_view(torch.randn(B, A, K, 2), torch.randn(B, A, K))
    terms = loss(
        view,
        pose_view(torch.randn(B, A, K, 2), torch.randn(B, A, K)),
        pose_targets(torch.zeros(B, A, dtype=torch.bool)),
    )
    assert all(float(term) == 0.0 for term in terms.values())


def test_other_tasks_and_keypoint_shapes_are_refused():
    """A non-pose head, or another keypoint shape, is refused when the run is built."""
    with pytest.raises(ValueError, match="loss 'kptkd' distils keypoints, but the teacher is a detect model"):
        KeypointKDLoss(KeypointKDParams(), replace(POSE, task="detect", keypoint_shape=None), POSE)
    with pytest.raises(ValueError, match=r"teacher keypoint shape \[17, 3\], student \[2, 3\]"):
        KeypointKDLoss(KeypointKDParams(), replace(POSE, keypoint_shape=(17, 3)), POSE)


def test_term_on_the_pose_losss_own_assignment_uses_pixel_areas():
    """Through the criterion's capture of v8PoseLoss' assignment, a student 5 px (3, 4) off the teacher on every
    keypoint of a 25.6 px object gives the hand value 12 · (1 - exp(-25 / (8 · 0.25² · 25.6²))) = 0.881, not the ~12 of
    a stride²-small area (v8PoseLoss divides its target boxes by the stride in place after the assignment)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import PoseModel

    from yolokd.engine.criterion import student_loss_and_targets

    torch.manual_seed(0)
    model = PoseModel("yolov8n-pose.yaml", nc=1, data_kpt_shape=(4, 3), verbose=False).train()
    model.args = get_cfg()
    box = torch.tensor([[0.5, 0.5, 0.4, 0.4]])  # normalised xywh: 25.6 x 25.6 px in a 64 px image
    corners = box[:, None, :2] + torch.tensor([[-0.1, 0.0], [0.0, -0.1], [0.1, 0.0], [0.0, 0.1]])
    batch = {
        "img": torch.rand(1, 3, 64, 64),
        "batch_idx": torch.zeros(1),
        "cls": torch.zeros(1, 1),
        "bboxes": box,
        "keypoints": torch.cat((corners, torch.full((1, 4, 1), 2.0)), -1),
    }
    _, _, targets = student_loss_and_targets(model.init_criterion(), model(batch["img"]), batch)
    target = targets["one2many"]
    anchors, count = target.fg_mask.shape[1], 4
    spec = replace(POSE, keypoint_shape=(count, 3))
    teacher_keypoints = torch.rand(1, anchors, count, 2) * 64
    offset = torch.tensor([3.0, 4.0])

    def view(keypoints: torch.Tensor) -> View:
        return replace(pose_view(keypoints, torch.zeros(1, anchors, count)), cls_logits=torch.zeros(1, anchors, 3))

    terms = KeypointKDLoss(KeypointKDParams(), spec, spec)(
        view(teacher_keypoints + offset), view(teacher_keypoints), target
    )
    assert bool(target.fg_mask.any())
    torch.testing.assert_close(terms["kptkd_loc"], torch.tensor(12.0 * (1 - math.exp(-25.0 / (8 * 0.25**2 * 25.6**2)))))
