"""Mask KD: masks assembled from coefficients x prototypes at the student's positives, KL or Dice inside the box."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from yolokd.losses.maskkd import MaskKDLoss, MaskKDParams, assemble_masks, box_region, mask_kd_loss
from yolokd.views import HeadSpec, Targets, View

SEGMENT = HeadSpec("seg test head", 3, (8.0,), 16, ("one2many",), (8,), {"box": 8, "cls": 8}, 2, task="segment")
B, A, K, H, W = 2, 4, 3, 4, 4  # 4 anchors per image, masks 4x4 for a 16x16 input


def seg_view(coefficients: torch.Tensor, prototypes: torch.Tensor) -> View:
    """A View with the given mask coefficients (B, A, K) and prototypes (B, K, H, W); detection outputs zero."""
    return View(
        feats=[torch.zeros(B, 8, 2, 2)],
        cls_logits=torch.zeros(B, A, 3),
        box_output=torch.zeros(B, A, 64),
        boxes=torch.zeros(B, A, 4),
        anchors=torch.zeros(A, 2),
        strides=torch.full((A, 1), 8.0),
        reg_max=16,
        mask_coefficients=coefficients,
        prototypes=prototypes,
    )


def seg_targets(fg_mask: torch.Tensor, boxes: torch.Tensor) -> Targets:
    """Targets with a (B, A) positive mask and (B, A, 4) assigned boxes (xyxy, pixels of a 16x16 input)."""
    return Targets(
        fg_mask=fg_mask,
        gt_index=torch.zeros(B, A, dtype=torch.long),
        target_boxes=boxes,
        gt_boxes=torch.zeros(B, 0, 4),
        gt_labels=torch.zeros(B, 0, dtype=torch.long),
        gt_mask=torch.zeros(B, 0, dtype=torch.bool),
        image_size=torch.tensor([16.0, 16.0]),
    )


def test_kl_known_value():
    """Student logit 0 (p=0.5), teacher p=0.8: 0.8 ln(0.8/0.5) + 0.2 ln(0.2/0.5) = 0.1927448 at every pixel."""
    student = torch.zeros(1, 2, 2)
    teacher = torch.full((1, 2, 2), math.log(4.0))
    loss = mask_kd_loss(student, teacher, torch.ones(1, 2, 2), "kl")
    torch.testing.assert_close(loss, torch.tensor([0.8 * math.log(1.6) + 0.2 * math.log(0.4)]))


def test_dice_known_value():
    """Soft Dice at p_s = 0.5, p_t = 0.8: 1 - 2 * 0.4 / (0.25 + 0.64) = 0.1011236."""
    loss = mask_kd_loss(torch.zeros(1, 2, 2), torch.full((1, 2, 2), math.log(4.0)), torch.ones(1, 2, 2), "dice")
    torch.testing.assert_close(loss, torch.tensor([1 - 0.8 / 0.89]))


@pytest.mark.parametrize("kind", ["kl", "dice"])
def test_zero_loss_and_gradient_at_student_equal_teacher(kind):
    """Student == teacher gives 0 and a zero gradient (KL and Dice are at their minimum)."""
    masks = torch.randn(3, 4, 4)
    student = masks.clone().requires_grad_()
    loss = mask_kd_loss(student, masks, torch.ones(3, 4, 4), kind)
    torch.testing.assert_close(loss, torch.zeros(3), atol=1e-6, rtol=0)
    (grad,) = torch.autograd.grad(loss.sum(), student)
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["kl", "dice"])
def test_only_the_region_counts(kind):
    """Pixels outside the region change nothing; an empty region gives 0."""
    student, teacher = torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    region = torch.zeros(1, 4, 4)
    region[:, 1:3, 1:3] = 1
    changed = student.clone()
    changed[:, 0] += 5.0
    assert torch.equal(mask_kd_loss(student, teacher, region, kind), mask_kd_loss(changed, teacher, region, kind))
    assert float(mask_kd_loss(student, teacher, torch.zeros(1, 4, 4), kind)) == 0.0


def test_box_region_follows_ultralytics_crop():
    """Pixel column i is inside when x1 <= i < x2 (rows likewise)."""
    region = box_region(torch.tensor([[1.0, 0.5, 3.0, 2.0]]), 4, 4)
    expected = torch.zeros(1, 4, 4)
    expected[0, 1:2, 1:3] = 1  # rows 1 (0.5 <= 1 < 2), columns 1, 2
    assert torch.equal(region, expected)


def test_assemble_masks_matches_a_loop():
    """Each mask is coefficients[b, index[b, p]] @ prototypes[b]."""
    coefficients, prototypes = torch.randn(B, A, K), torch.randn(B, K, H, W)
    index = torch.tensor([[2, 0], [3, 3]])
    masks = assemble_masks(coefficients, prototypes, index)
    for b in range(B):
        for p in range(2):
            expected = torch.einsum("k,khw->hw", coefficients[b, index[b, p]], prototypes[b])
            torch.testing.assert_close(masks[b, p], expected)


def make_pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = seg_view(torch.randn(B, A, K, generator=g), torch.randn(B, K, H, W, generator=g))
    teacher = seg_view(torch.randn(B, A, 5, generator=g), torch.randn(B, 5, H, W, generator=g))  # other K
    fg_mask = torch.tensor([[True, False, True, False], [False, False, False, True]])
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [0, 0, 0, 0], [4.0, 4.0, 12.0, 16.0], [0, 0, 0, 0]])
    boxes = torch.stack([boxes, boxes.flip(0)])
    return student, teacher, seg_targets(fg_mask, boxes)


@pytest.mark.parametrize("kind", ["kl", "dice"])
def test_module_matches_a_loop_over_positives(kind):
    """mask = weight * sum over the student's positives of the per-mask loss in its box (mask pixels) / N_pos."""
    student, teacher, targets = make_pair()
    loss = MaskKDLoss(MaskKDParams(weight=2.0, kind=kind), SEGMENT, SEGMENT)
    got = loss(student, teacher, targets)["maskkd_mask"]
    total = 0.0
    for b, a in targets.fg_mask.nonzero().tolist():
        s = torch.einsum("k,khw->hw", student.mask_coefficients[b, a], student.prototypes[b])
        t = torch.einsum("k,khw->hw", teacher.mask_coefficients[b, a], teacher.prototypes[b])
        region = box_region(targets.target_boxes[b, a][None] / 4, H, W)  # 16 px input -> 4 px masks
        total += float(mask_kd_loss(s[None], t[None], region, kind))
    torch.testing.assert_close(got, torch.tensor(2.0 * total / 3))


def test_gradient_reaches_the_student_never_the_teacher():
    """The student's coefficients and prototypes get a gradient; the teacher's tensors take none."""
    student, teacher, targets = make_pair()
    student.mask_coefficients.requires_grad_()
    student.prototypes.requires_grad_()
    term = MaskKDLoss(MaskKDParams(), SEGMENT, SEGMENT)(student, teacher, targets)["maskkd_mask"]
    term.backward()
    assert student.mask_coefficients.grad.abs().sum() > 0 and student.prototypes.grad.abs().sum() > 0
    assert not teacher.mask_coefficients.requires_grad


def test_no_positives_stays_finite_and_zero():
    """A batch without positives (no GT) gives an exact, finite 0."""
    student, teacher, targets = make_pair()
    targets.fg_mask = torch.zeros(B, A, dtype=torch.bool)
    term = MaskKDLoss(MaskKDParams(), SEGMENT, SEGMENT)(student, teacher, targets)["maskkd_mask"]
    assert float(term) == 0.0


def test_detect_heads_are_refused():
    """A detect teacher or student is refused when the run is built, naming the task."""
    detect = replace(SEGMENT, task="detect", family="det test head")
    with pytest.raises(ValueError, match="the teacher is a detect model"):
        MaskKDLoss(MaskKDParams(), detect, SEGMENT)
    with pytest.raises(ValueError, match="kind='bce' is not one of"):
        MaskKDParams(kind="bce")
