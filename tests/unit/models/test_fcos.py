"""FCOS: centerness target, assignment (centre sampling, scale ranges, smallest GT), loss and head outputs."""

import math

import pytest
import torch
from dense_models import TINY_GFL, gt_batch, tiny_fcos
from ultralytics.utils.tal import make_anchors

from yolokd.models import DenseDetectionModel, FCOSAssigner, FCOSLoss, centerness_target

GRID = (8, 8, 8.0)  # one 8x8 level of stride 8: a 64 px image


def _assign(gt_boxes, radius=1.5, ranges=((0.0, 64.0),), levels=(GRID,)):
    feats = [torch.zeros(1, 1, h, w) for h, w, _ in levels]
    points, strides = make_anchors(feats, torch.tensor([s for *_, s in levels]), 0.5)
    points = points * strides
    sizes = torch.tensor([h * w for h, w, _ in levels])
    anchor_ranges = torch.tensor(ranges).repeat_interleave(sizes, dim=0)
    batch, count = gt_boxes.shape[:2]
    assigner = FCOSAssigner(num_classes=2, radius=radius)
    labels = torch.arange(count, dtype=torch.float32).remainder(2).view(1, count, 1).expand(batch, -1, -1)
    return assigner(
        torch.zeros(batch, len(points), 2),
        torch.zeros(batch, len(points), 4),
        points,
        labels,
        gt_boxes,
        torch.ones(batch, count, 1),
        strides,
        anchor_ranges,
    )


def test_centerness_known_value():
    """ltrb (1, 3, 2, 2): sqrt(1/2 * 2/3) = 0.57735; the box centre gives 1."""
    values = centerness_target(torch.tensor([[1.0, 3.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0]]))
    assert torch.allclose(values, torch.tensor([math.sqrt(1 / 3), 1.0]))


def test_centre_sampling_keeps_the_cells_near_the_centre():
    """GT [0,0,32,32], radius 1.5 strides: region [4,4,28,28] holds 2x2 anchor centres; radius 0: all 4x4 inside."""
    gt = torch.tensor([[[0.0, 0.0, 32.0, 32.0]]])
    _, _, scores, fg, _ = _assign(gt)
    assert fg.view(8, 8)[:4, :4].nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]] and fg.sum() == 4
    assert torch.equal(scores[fg], torch.tensor([[1.0, 0.0]]).expand(4, -1))
    assert _assign(gt, radius=0.0)[3].sum() == 16


def test_scale_range_sends_large_boxes_to_coarser_levels():
    """A 64x64 GT reaches 36 px from its centre cells: P3's (0, 32] range refuses it, P4's (32, inf) takes it."""
    gt = torch.tensor([[[0.0, 0.0, 64.0, 64.0]]])
    levels, ranges = (GRID, (4, 4, 16.0)), ((0.0, 32.0), (32.0, math.inf))
    fg = _assign(gt, ranges=ranges, levels=levels)[3][0]
    assert not fg[:64].any() and fg[64:].sum() == 4


def test_ambiguous_anchor_takes_the_smallest_gt():
    """Anchors inside both a large and a small GT's centre regions go to the small one."""
    gt = torch.tensor([[[0.0, 0.0, 48.0, 48.0], [8.0, 8.0, 32.0, 32.0]]])
    _, _, _, fg, gt_index = _assign(gt, radius=0.0)
    inner = torch.zeros(8, 8, dtype=torch.bool)
    inner[1:4, 1:4] = True  # centres 12, 20, 28 are inside [8, 32]
    assert torch.equal(gt_index[0][inner.flatten()], torch.ones(9, dtype=torch.long))
    assert fg.sum() == 36 and (gt_index[fg] == 0).sum() == 27


def test_loss_terms_named_finite_and_empty_batch_safe():
    """box (GIoU), cls (focal), ctr (centerness BCE) are finite and > 0; no GT: box and ctr 0, focal > 0."""
    model = tiny_fcos().train()
    batch = gt_batch()
    criterion = FCOSLoss(model)
    loss, items = criterion(model(batch["img"]), batch)
    assert list(items) == ["box_loss", "cls_loss", "ctr_loss"] and torch.isfinite(loss).all() and (loss > 0).all()
    empty = {**batch, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    loss, items = criterion(model(batch["img"]), empty)
    assert items["box_loss"] == 0 and items["ctr_loss"] == 0 and items["cls_loss"] > 0
    loss.sum().backward()


def test_eval_scores_are_class_times_centerness():
    """Eval output (B, 4 + C, A): scores σ(cls) σ(ctr); distances are >= 0 in the raw output."""
    model = tiny_fcos().eval()
    decoded, raw = model(torch.rand(1, 3, 64, 64))
    assert decoded.shape == (1, 7, 84) and raw["centerness"].shape == (1, 1, 84) and raw["boxes"].min() >= 0
    assert torch.allclose(decoded[:, 4:], raw["scores"].sigmoid() * raw["centerness"].sigmoid())


def test_fcos_needs_reg_max_1():
    """A YAML without 'reg_max: 1' is refused with the fix."""
    cfg = {**TINY_GFL, "head": [[[2, 3, 4], 1, "FCOSDetect", ["nc", 2]]]}
    with pytest.raises(ValueError, match="set 'reg_max: 1'"):
        DenseDetectionModel(cfg, verbose=False)
