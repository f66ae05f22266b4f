"""ATSS assignment: a hand-made case, the max-IoU rule, empty GT, and a per-GT loop oracle (mmdetection's order)."""

import torch
from torchvision.ops import box_iou
from ultralytics.utils.tal import make_anchors

from yolokd.models import ATSSAssigner
from yolokd.models.atss import anchor_boxes

LEVELS = [(4, 4, 8.0), (2, 2, 16.0)]  # (H, W, stride): a 32 px image


def _anchors(levels=LEVELS):
    feats = [torch.zeros(1, 1, h, w) for h, w, _ in levels]
    points, strides = make_anchors(feats, torch.tensor([s for *_, s in levels]), 0.5)
    return points * strides, strides, [h * w for h, w, _ in levels]  # pixels


def _assign(gt_boxes, gt_labels, topk, anchor_scale=1.0, levels=LEVELS):
    points, strides, sizes = _anchors(levels)
    batch, count = gt_boxes.shape[:2]
    scores = torch.zeros(batch, len(points), 3)
    pred_boxes = anchor_boxes(points, strides, 2.0).expand(batch, -1, -1)  # 16 px squares (2 strides) around anchors
    mask = torch.ones(batch, count, 1)
    assigner = ATSSAssigner(num_classes=3, topk=topk, anchor_scale=anchor_scale)
    return assigner(scores, pred_boxes, points, gt_labels.view(batch, count, 1).float(), gt_boxes, mask, strides, sizes)


def test_hand_case_gt_over_four_cells_takes_them():
    """One 4x4 level, 8 px anchor boxes, k=4, GT [0,0,16,16]: the four closest cells have IoU 0.25 each, so the
    threshold is 0.25 + 0 and all four (centres inside) are positive, with the GT's box and class."""
    gt = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    labels, boxes, _, fg, gt_index = _assign(gt, torch.tensor([[2]]), topk=4, levels=LEVELS[:1])
    expected = torch.zeros(1, 16, dtype=torch.bool)
    expected[0, [0, 1, 4, 5]] = True  # cells (0,0), (1,0), (0,1), (1,1)
    assert torch.equal(fg, expected)
    assert torch.equal(labels[fg], torch.full((4,), 2)) and torch.equal(gt_index[fg], torch.zeros(4, dtype=torch.long))
    assert torch.equal(boxes[fg], gt[0].expand(4, -1))


def test_hand_case_threshold_adapts_across_levels():
    """Add the 2x2 level (16 px anchors): its cell (0,0) box is the GT (IoU 1), the other three 0; the 8 candidate
    IoUs (0.25 x4, 1, 0 x3) give mean 0.25 + std sqrt(0.75 / 7) = 0.577, so only that coarse cell is positive."""
    _, _, _, fg, _ = _assign(torch.tensor([[[0.0, 0.0, 16.0, 16.0]]]), torch.tensor([[2]]), topk=4)
    expected = torch.zeros(1, 20, dtype=torch.bool)
    expected[0, 16] = True
    assert torch.equal(fg, expected)


def test_quality_targets_are_iou_of_prediction_and_gt_on_the_class():
    """target_scores = IoU(predicted box, assigned GT) on the GT's class, 0 on other classes and on background."""
    gt = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    _, _, scores, fg, _ = _assign(gt, torch.tensor([[2]]), topk=4, levels=LEVELS[:1])
    # predictions are 16 px squares around anchors: cell (0,0) -> [-4,-4,12,12] vs [0,0,16,16]: 144 / 368
    assert torch.allclose(scores[0, 0], torch.tensor([0.0, 0.0, 144 / 368]))
    assert scores[~fg].abs().sum() == 0 and scores[fg][:, :2].abs().sum() == 0


def test_anchor_claimed_by_two_gts_takes_the_higher_iou():
    """The same cells are positive for a GT and a slightly larger copy: every one goes to the GT it overlaps most."""
    gt = torch.tensor([[[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 18.0, 18.0]]])
    _, _, _, fg, gt_index = _assign(gt, torch.tensor([[0, 1]]), topk=4)
    points, strides, _ = _anchors()
    iou = box_iou(gt[0], anchor_boxes(points, strides, 1.0))  # (2, A)
    assert fg.any() and torch.equal(gt_index[fg], iou.argmax(0)[fg[0]])


def test_empty_gt_assigns_nothing():
    """No GT rows: no foreground, zero targets."""
    _, _, scores, fg, _ = _assign(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), topk=4)
    assert not fg.any() and scores.abs().sum() == 0 and fg.shape == (2, 20)


def _oracle(points, strides, sizes, gt_boxes, topk, anchor_scale):
    """mmdetection's ATSSAssigner for one image, GT by GT and level by level: (A,) assigned GT index or -1."""
    boxes = anchor_boxes(points, strides, anchor_scale)
    overlaps = box_iou(boxes, gt_boxes)  # (A, M)
    best = torch.full((len(points),), -1.0)
    assigned = torch.full((len(points),), -1)
    for g, gt in enumerate(gt_boxes):
        centre = (gt[:2] + gt[2:]) / 2
        candidates, start = [], 0
        for size in sizes:
            dist = (points[start : start + size] - centre).norm(dim=1)
            candidates += (dist.topk(min(topk, size), largest=False).indices + start).tolist()
            start += size
        ious = overlaps[candidates, g]
        threshold = ious.mean() + ious.std()
        for a, iou in zip(candidates, ious.tolist(), strict=True):
            x, y = points[a].tolist()
            inside = min(x - gt[0], y - gt[1], gt[2] - x, gt[3] - y) > 0.01
            if iou >= threshold and inside and iou > best[a]:
                best[a], assigned[a] = iou, g
    return assigned


def test_matches_a_loop_oracle_on_random_boxes():
    """Random GT (several per image, padding rows included) on 3 levels: fg and GT index equal the loop oracle's."""
    torch.manual_seed(0)
    levels = [(8, 8, 8.0), (4, 4, 16.0), (2, 2, 32.0)]
    points, strides, sizes = _anchors(levels)
    centres, halves = torch.rand(3, 5, 2) * 64, torch.rand(3, 5, 2) * 24 + 3
    gt = torch.cat((centres - halves, centres + halves), -1).clamp(0, 64)
    mask = torch.ones(3, 5, 1)
    mask[1, 3:] = 0  # image 1 has 3 GT, then 2 padding rows
    gt = gt * mask
    assigner = ATSSAssigner(num_classes=3, topk=9, anchor_scale=8.0)
    preds = anchor_boxes(points, strides, 8.0).expand(3, -1, -1)
    _, _, _, fg, gt_index = assigner(
        torch.zeros(3, len(points), 3), preds, points, torch.zeros(3, 5, 1), gt, mask, strides, sizes
    )
    for image in range(3):
        count = int(mask[image].sum())
        expected = _oracle(points, strides, sizes, gt[image, :count], topk=9, anchor_scale=8.0)
        assert torch.equal(fg[image], expected >= 0)
        assert torch.equal(gt_index[image][fg[image]], expected[expected >= 0])
    assert fg.sum() > 10
