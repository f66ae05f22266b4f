"""PGD maths on small hand-made tensors (SPEC §3): prediction-guided weights, attention, the loss module."""

import math

import pytest
import torch
from torchvision.ops import box_iou
from ultralytics.utils.tal import make_anchors

from yolokd.losses.common import channel_attention, spatial_attention
from yolokd.losses.pgd import (
    PGDLoss,
    PGDParams,
    pgd_box_loss,
    pgd_cls_loss,
    prediction_guided_weights,
    prediction_quality,
)
from yolokd.views import HeadSpec, Targets, View

STRIDES = (8.0, 16.0, 32.0)
IMAGE = 64  # grids 8x8, 4x4, 2x2: A = 84 anchors
NUM_CLASSES = 3


def anchor_layout() -> tuple[torch.Tensor, torch.Tensor]:
    """(A, 2) anchor centres in pixels and (A, 1) strides, in the View's level order (P3 first, row-major)."""
    feats = [torch.zeros(1, 1, int(IMAGE // s), int(IMAGE // s)) for s in STRIDES]
    anchors, strides = make_anchors(feats, torch.tensor(STRIDES), 0.5)
    return anchors * strides, strides


def spec(box_width: int, cls_width: int) -> HeadSpec:
    return HeadSpec(
        "test head", NUM_CLASSES, STRIDES, 16, ("one2many",), (16, 16, 16), {"box": box_width, "cls": cls_width}, 2
    )


def teacher_predictions(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random class probabilities and boxes that contain their own anchor centre (so every IoU inside a GT is > 0)."""
    generator = torch.Generator().manual_seed(seed)
    points, _ = anchor_layout()
    scores = torch.rand(batch, len(points), NUM_CLASSES, generator=generator) * 0.98 + 0.01
    extent = 4 + 16 * torch.rand(batch, len(points), 4, generator=generator)
    boxes = torch.cat([points - extent[..., :2], points + extent[..., 2:]], dim=-1)
    return scores, boxes


def gts(boxes: list[list[list[float]]], labels: list[list[int]]):
    """Pad per-image GT lists to (B, M, 4), (B, M), (B, M) bool."""
    most = max(len(b) for b in boxes)
    gt_boxes = torch.zeros(len(boxes), most, 4)
    gt_labels = torch.zeros(len(boxes), most, dtype=torch.long)
    gt_mask = torch.zeros(len(boxes), most, dtype=torch.bool)
    for i, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        gt_boxes[i, : len(image_boxes)] = torch.tensor(image_boxes).view(-1, 4)
        gt_labels[i, : len(image_labels)] = torch.tensor(image_labels, dtype=torch.long)
        gt_mask[i, : len(image_boxes)] = True
    return gt_boxes, gt_labels, gt_mask


def naive_weights(scores, boxes, points, gt_boxes, gt_labels, gt_mask, k, xi):
    """Loop oracle: per image, per GT, inside anchors -> top-k -> float64 Gaussian MLE with the same ridge -> max."""
    out = torch.zeros(scores.shape[:2], dtype=torch.float64)
    for b in range(gt_boxes.shape[0]):
        for m in range(gt_boxes.shape[1]):
            if not gt_mask[b, m]:
                continue
            x1, y1, x2, y2 = gt_boxes[b, m].tolist()
            inside = [a for a, (x, y) in enumerate(points.tolist()) if x1 < x < x2 and y1 < y < y2]
            if not inside:
                continue
            ious = box_iou(boxes[b, inside], gt_boxes[b, m : m + 1]).squeeze(1)
            quality = scores[b, inside, gt_labels[b, m]] ** (1 - xi) * ious**xi
            chosen = [inside[i] for i in quality.argsort(descending=True)[:k].tolist()]
            selected = points[chosen].double()
            offset = selected - selected.mean(0)
            covariance = offset.T @ offset / len(chosen)
            covariance += (1e-2 + 1e-3 * covariance.trace() / 2) * torch.eye(2, dtype=torch.float64)
            weights = torch.exp(-0.5 * ((offset @ torch.linalg.inv(covariance)) * offset).sum(1))
            out[b, chosen] = torch.maximum(out[b, chosen], weights)
    return out


def test_weights_in_unit_interval():
    """PGW weights lie in [0, 1] on a random batch."""
    scores, boxes = teacher_predictions(2)
    gt = gts([[[3, 5, 60, 40], [20, 10, 50, 63]], [[0, 0, 64, 64]]], [[0, 2], [1]])
    weights = prediction_guided_weights(scores, boxes, anchor_layout()[0], *gt, k=30, xi=0.8)
    assert weights.shape == (2, 84) and weights.min() >= 0 and weights.max() <= 1


def test_weights_only_on_the_top_k_inside_anchors():
    """One GT: non-zeros are at most K, all inside the box and all among the K best inside anchors by quality."""
    scores, boxes = teacher_predictions(1)
    points = anchor_layout()[0]
    gt = gts([[[2, 6, 45, 58]]], [[1]])
    weights = prediction_guided_weights(scores, boxes, points, *gt, k=7, xi=0.6)[0]
    inside = (points[:, 0] > 2) & (points[:, 0] < 45) & (points[:, 1] > 6) & (points[:, 1] < 58)
    quality = prediction_quality(scores, boxes, gt[0], gt[1], xi=0.6)[0, 0]
    top = set(torch.where(inside, quality, -1.0).topk(7).indices.tolist())
    nonzero = set(torch.nonzero(weights).flatten().tolist())
    assert 0 < len(nonzero) <= 7 and nonzero <= top and inside[list(nonzero)].all()


def test_weight_is_one_at_the_gaussian_mean():
    """A symmetric 3x3 block of best anchors (IoU 1) has its Gaussian mean on the centre anchor: weight 1 there."""
    points = anchor_layout()[0]
    gt_box = torch.tensor([4.0, 4.0, 60.0, 60.0])
    block = [(x, y) for x in (20.0, 28.0, 36.0) for y in (20.0, 28.0, 36.0)]
    best = torch.stack([((points - torch.tensor(c)).abs().sum(1) == 0) for c in block]).any(0)
    boxes = torch.cat([points - 1, points + 1], dim=-1)  # small boxes: low IoU
    boxes[best] = gt_box  # IoU 1 on the 3x3 block
    scores = torch.full((1, len(points), NUM_CLASSES), 0.5)
    weights = prediction_guided_weights(scores, boxes.unsqueeze(0), points, *gts([[gt_box.tolist()]], [[0]]), k=9)
    centre = ((points - torch.tensor([28.0, 28.0])).abs().sum(1) == 0).nonzero().item()
    assert weights[0, centre].item() == pytest.approx(1.0, abs=1e-6)
    assert (weights[0] > 0).sum() == 9 and (weights[0, ~best] == 0).all()


def test_matches_naive_loop_oracle():
    """The vectorised weights equal a per-image, per-GT loop with float64 Gaussian fits (overlapping GTs, padding)."""
    scores, boxes = teacher_predictions(3, seed=1)
    points = anchor_layout()[0]
    gt = gts(
        [[[3, 5, 60, 40], [20, 10, 50, 63], [30, 30, 34, 34]], [[0, 0, 64, 64]], [[10, 1, 62, 15], [5, 9, 20, 60]]],
        [[0, 2, 1], [1], [2, 2]],
    )
    for k, xi in ((5, 0.8), (30, 0.6), (1, 0.8)):
        fast = prediction_guided_weights(scores, boxes, points, *gt, k=k, xi=xi)
        slow = naive_weights(scores, boxes, points, *gt, k=k, xi=xi)
        assert torch.allclose(fast.double(), slow, atol=1e-5), (k, xi)


def test_images_without_gts_get_zero_weights():
    """A batch without GT rows (M = 0), and an image whose rows are all padding, give all-zero weights."""
    scores, boxes = teacher_predictions(2)
    points = anchor_layout()[0]
    empty = prediction_guided_weights(
        scores,
        boxes,
        points,
        torch.zeros(2, 0, 4),
        torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, dtype=torch.bool),
    )
    padded = prediction_guided_weights(scores, boxes, points, *gts([[[5, 5, 60, 60]], []], [[0], []]))
    assert empty.shape == (2, 84) and empty.abs().sum() == 0
    assert padded[0].sum() > 0 and padded[1].abs().sum() == 0


def test_one_gt_with_fewer_than_k_candidates_uses_only_those():
    """A GT holding 4 anchor centres with K = 30 weights exactly those 4 (the Gaussian fitted to them alone)."""
    scores, boxes = teacher_predictions(1)
    points = anchor_layout()[0]
    weights = prediction_guided_weights(scores, boxes, points, *gts([[[10, 26, 22, 38]]], [[2]]), k=30)[0]
    assert weights.nonzero().flatten().tolist() == [25, 26, 33, 34]  # P3 columns 1-2 of rows 3-4
    assert torch.allclose(weights[[25, 26, 33, 34]], torch.full((4,), math.exp(-1.0)), rtol=5e-3)


def test_gt_smaller_than_a_cell():
    """A 2 px GT around one anchor centre weighs that anchor 1 and nothing else; one between centres weighs nothing."""
    scores, boxes = teacher_predictions(1)
    points = anchor_layout()[0]
    around = prediction_guided_weights(scores, boxes, points, *gts([[[11, 11, 13, 13]]], [[0]]))[0]
    between = prediction_guided_weights(scores, boxes, points, *gts([[[1, 1, 3, 3]]], [[0]]))[0]
    assert around.nonzero().flatten().tolist() == [9] and around[9].item() == 1.0
    assert between.abs().sum() == 0


def test_spatial_attention_sums_to_cells_and_channel_attention_to_channels():
    """A^S sums to H·W over each image; per-pixel A^C sums to D over the channels of each cell."""
    feat = torch.randn(2, 5, 3, 4)
    assert torch.allclose(spatial_attention(feat, 0.8).sum(dim=(1, 2)), torch.full((2,), 12.0), atol=1e-4)
    assert torch.allclose(channel_attention(feat, 0.8).sum(dim=1), torch.full((2, 3, 4), 5.0), atol=1e-4)


def make_views(student_widths=(8, 6), teacher_widths=(8, 6), batch=2, seed=0, requires_grad=False):
    """Student and teacher Views with random stage-0 features and the predictions of `teacher_predictions`."""
    generator = torch.Generator().manual_seed(seed)
    anchors_px, strides = anchor_layout()
    scores, boxes = teacher_predictions(batch, seed)
    sizes = [int(IMAGE // s) for s in STRIDES]

    def view(widths):
        stages = {
            part: [[torch.randn(batch, w, n, n, generator=generator, requires_grad=requires_grad) for n in sizes]]
            for part, w in zip(("box", "cls"), widths, strict=True)
        }
        return View(
            feats=[torch.zeros(batch, 16, n, n) for n in sizes],
            cls_logits=torch.logit(scores),
            box_output=torch.zeros(batch, len(strides), 64),
            boxes=boxes,
            anchors=anchors_px / strides,
            strides=strides,
            reg_max=16,
            stages=stages,
        )

    return view(student_widths), view(teacher_widths)


def targets(boxes, labels) -> Targets:
    gt_boxes, gt_labels, gt_mask = gts(boxes, labels)
    batch = gt_boxes.shape[0]
    return Targets(
        fg_mask=torch.zeros(batch, 84, dtype=torch.bool),
        gt_index=torch.zeros(batch, 84, dtype=torch.long),
        target_boxes=torch.zeros(batch, 84, 4),
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        gt_mask=gt_mask,
        image_size=torch.tensor([64.0, 64.0]),
    )


GT = ([[[3, 5, 60, 40], [20, 10, 50, 63]], [[0, 0, 64, 64]]], [[0, 2], [1]])


def test_all_terms_zero_when_student_equals_teacher():
    """Equal widths and equal stage features: every PGD term is exactly 0."""
    student, teacher = make_views()
    teacher.stages = student.stages
    terms = PGDLoss(PGDParams(), spec(8, 6), spec(8, 6))(student, teacher, targets(*GT))
    assert set(terms) == {"pgd_cls_fg", "pgd_cls_bg", "pgd_box", "pgd_att"}
    assert all(value.item() == 0.0 for value in terms.values())


def test_gradients_reach_student_and_aligners_never_teacher():
    """Every term gives the student's stage features a gradient (through aligners); teacher tensors get none."""
    student, teacher = make_views(student_widths=(8, 6), teacher_widths=(12, 10), requires_grad=True)
    loss = PGDLoss(PGDParams(), spec(12, 10), spec(8, 6))
    terms = loss(student, teacher, targets(*GT))
    for name, value in terms.items():
        inputs = [f for part in student.stages.values() for f in part[0]]
        grads = torch.autograd.grad(value, inputs, allow_unused=True, retain_graph=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in loss.parameters())
    assert all(f.grad is None for part in teacher.stages.values() for f in part[0])


def test_empty_gt_batch_is_finite_with_gradient():
    """No GT box anywhere: foreground terms are 0, background and attention terms finite with a student gradient."""
    student, teacher = make_views(requires_grad=True)
    terms = PGDLoss(PGDParams(), spec(8, 6), spec(8, 6))(student, teacher, targets([[], []], [[], []]))
    assert terms["pgd_cls_fg"].item() == 0 and terms["pgd_box"].item() == 0
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total) and student.stages["cls"][0][0].grad.abs().sum() > 0


def test_module_terms_follow_the_documented_normalisation():
    """pgd_cls_fg = α Σ_l λ_l Σ(M_fg / #nonzero per image) A^S A^C (ΔF)² / B, from the public functional cores."""
    student, teacher = make_views()
    target = targets(*GT)
    params = PGDParams()
    terms = PGDLoss(params, spec(8, 6), spec(8, 6))(student, teacher, target)
    weights = prediction_guided_weights(
        teacher.cls_logits.sigmoid(),
        teacher.boxes,
        anchor_layout()[0],
        target.gt_boxes,
        target.gt_labels,
        target.gt_mask,
    )
    expected, start = 0.0, 0
    for level, size in enumerate(int(IMAGE // s) for s in STRIDES):
        mask = weights[:, start : start + size * size].reshape(2, size, size)
        mask = mask / (mask != 0).sum(dim=(1, 2), keepdim=True).clamp(min=1)
        start += size * size
        sums = pgd_cls_loss(student.stages["cls"][0][level], teacher.stages["cls"][0][level], mask, 0.8)
        feature_sum = sums["feature"]
        expected += params.level_weights[level] * feature_sum / 2
    assert terms["pgd_cls_fg"].item() == pytest.approx(params.fg_weight * expected.item(), rel=1e-5)


def test_box_terms_on_gathered_cells_equal_the_dense_maps():
    """pgd_box and the box attention, computed on the gathered foreground cells, equal the whole-map computation."""
    student, teacher = make_views(seed=3)
    target = targets(*GT)
    params = PGDParams(attention_weight=1.0, fg_weight=0.0, bg_weight=0.0)
    loss = PGDLoss(params, spec(8, 6), spec(8, 6))
    terms = loss(student, teacher, target)
    box_weights = prediction_guided_weights(
        teacher.cls_logits.sigmoid(), teacher.boxes, anchor_layout()[0], *gts(*GT), xi=params.box_xi
    )
    box, box_attention, start = 0.0, 0.0, 0
    for level, size in enumerate(int(IMAGE // s) for s in STRIDES):
        weights = box_weights[:, start : start + size * size].reshape(2, size, size)
        start += size * size
        sums = pgd_box_loss(student.stages["box"][0][level], teacher.stages["box"][0][level], weights, 0.8)
        count = (weights > 0).sum().clamp(min=1)
        box += sums["feature"] / count
        box_attention += sums["channel_attention"] / count
    cls_attention = sum(
        loss._cls_level_terms(s, t, torch.zeros(2, *s.shape[-2:]), torch.zeros(2, *s.shape[-2:]))["att"]
        for s, t in zip(student.stages["cls"][0], teacher.stages["cls"][0], strict=True)
    )
    assert terms["pgd_box"].item() == pytest.approx(params.box_weight * box.item(), rel=1e-5)
    assert terms["pgd_att"].item() == pytest.approx((box_attention + cls_attention).item(), rel=1e-5)


def test_training_masks_equal_the_loop_oracle():
    """PGDLoss.weight_masks (what training uses): cls and box masks equal the loop oracle at their ξ; the background
    indicator is 1 exactly on the anchors whose centre lies inside no GT box."""
    _, teacher = make_views(seed=2)
    params = PGDParams(topk=9)
    masks = PGDLoss(params, spec(8, 6), spec(8, 6)).weight_masks(teacher, targets(*GT))
    points = anchor_layout()[0]
    for part, xi in (("cls", params.cls_xi), ("box", params.box_xi)):
        oracle = naive_weights(teacher.cls_logits.sigmoid(), teacher.boxes, points, *gts(*GT), k=9, xi=xi)
        assert torch.allclose(masks[part].double(), oracle, atol=1e-5), part
    for image, boxes in enumerate(GT[0]):
        inside_any = torch.zeros(len(points), dtype=torch.bool)
        for x1, y1, x2, y2 in boxes:
            inside_any |= (points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2)
        assert torch.equal(masks["background"][image], (~inside_any).float()), image


def test_tuple_of_xi_stacks_the_single_xi_masks():
    """xi=(0.8, 0.6) gives the two masks that xi=0.8 and xi=0.6 give one at a time, bit for bit."""
    scores, boxes = teacher_predictions(2, seed=4)
    gt = gts(*GT)
    points = anchor_layout()[0]
    both = prediction_guided_weights(scores, boxes, points, *gt, k=5, xi=(0.8, 0.6))
    assert both.shape == (2, 2, 84)
    assert torch.equal(both[0], prediction_guided_weights(scores, boxes, points, *gt, k=5, xi=0.8))
    assert torch.equal(both[1], prediction_guided_weights(scores, boxes, points, *gt, k=5, xi=0.6))


def test_level_weights_must_match_the_head():
    """Two level weights for a three-level head is a ValueError naming both counts."""
    with pytest.raises(ValueError, match=r"2 levels.*3 levels"):
        PGDLoss(PGDParams(level_weights=(1.0, 1.25)), spec(8, 6), spec(8, 6))


def test_invalid_params_rejected():
    """ξ outside [0, 1] and K < 1 are clear ValueErrors."""
    with pytest.raises(ValueError, match="cls_xi"):
        PGDParams(cls_xi=1.5)
    with pytest.raises(ValueError, match="topk"):
        PGDParams(topk=0)
