"""RetinaNet: anchors, IoU-threshold assignment (thresholds, low-quality matches), the delta coder, the focal term,
the loss and the head's outputs."""

import math

import pytest
import torch
from dense_models import TINY_GFL, gt_batch, tiny_retinanet
from torchvision.ops import sigmoid_focal_loss
from ultralytics.cfg import get_cfg

from yolokd.models import (
    MODELS_DIR,
    DenseDetectionModel,
    MaxIoUAssigner,
    RetinaNetDetect,
    RetinaNetLoss,
    RetinaNetLossWeights,
    dense_head_name,
    max_iou_assignment,
    resolve_model_yaml,
)
from yolokd.models.anchors import anchor_boxes, anchor_shapes, decode_deltas, encode_deltas, grid_anchors
from yolokd.models.retinanet_loss import retinanet_terms


def test_nine_anchor_shapes_ratio_major():
    """4 strides x 2^(0, 1/3, 2/3) x ratios h/w 0.5, 1, 2: 9 shapes, ratio-major; at stride 8 the square ones are
    32, 40.3 and 50.8 px and the first is 45.25 x 22.6 px (w = s / sqrt(r), h = s sqrt(r))."""
    shapes = torch.tensor(anchor_shapes())
    assert shapes.shape == (9, 2)
    assert torch.allclose(shapes[3:6] * 8, torch.tensor([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)]).unsqueeze(1))
    assert torch.allclose(shapes[0] * 8, torch.tensor([32 * math.sqrt(2), 32 / math.sqrt(2)]))
    assert torch.allclose(shapes[6:], shapes[:3].flip(1))  # ratio 2 is ratio 0.5 turned


def test_grid_anchors_count_and_boxes_at_a_level():
    """A 64 px image at strides 8/16/32 has (64 + 16 + 4) x 9 = 756 anchors; cell (0, 1) of P3 centres its nine at
    (12, 4) px, the 32 px square one spans [-4, -12, 28, 20]."""
    feats = [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 2, 2)]
    centres, strides = grid_anchors(feats, torch.tensor([8.0, 16.0, 32.0]), 9)
    assert centres.shape == (756, 2) and strides.shape == (756, 1) and strides[-1] == 32
    boxes = anchor_boxes(centres, torch.tensor(anchor_shapes())) * strides
    cell = boxes[9:18]  # P3 row 0, column 1
    assert torch.allclose((cell[:, :2] + cell[:, 2:]) / 2, torch.tensor([12.0, 4.0]).expand(9, 2))
    assert torch.allclose(cell[3], torch.tensor([-4.0, -12.0, 28.0, 20.0]))


def test_delta_known_value_and_round_trip():
    """mmdetection's DeltaXYWH example: anchor [0,0,1,1] + deltas (1,1,1,1) -> [0.1409, 0.1409, 2.8591, 2.8591]
    (centre 0.5 + 1, side e); encoding a box and decoding it gives the box back."""
    decoded = decode_deltas(torch.ones(1, 4), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    half = math.e / 2
    assert torch.allclose(decoded, torch.tensor([[1.5 - half, 1.5 - half, 1.5 + half, 1.5 + half]]), atol=1e-5)
    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.0, 20.0, 30.0, 60.0]])
    boxes = torch.tensor([[4.0, -2.0, 40.0, 28.0], [12.0, 18.0, 50.0, 44.0]])
    deltas = encode_deltas(anchors, boxes)
    assert torch.allclose(deltas[0], torch.tensor([6 / 32, -3 / 32, math.log(36 / 32), math.log(30 / 32)]))
    assert torch.allclose(decode_deltas(deltas.unsqueeze(0), anchors)[0], boxes, atol=1e-4)


def _assign(overlaps, gt_mask=None):
    overlaps = torch.tensor(overlaps).unsqueeze(0)
    gt_mask = torch.ones(overlaps.shape[:2], dtype=torch.bool) if gt_mask is None else torch.tensor([gt_mask])
    positive, negative, gt_index = max_iou_assignment(overlaps, gt_mask)
    return positive[0].tolist(), negative[0].tolist(), gt_index[0].tolist()


def test_thresholds_make_positives_ignored_and_negatives():
    """One GT, IoUs 0.6 / 0.5 / 0.45 / 0.4 / 0.39 / 0: >= 0.5 positive, [0.4, 0.5) ignored, < 0.4 negative."""
    positive, negative, _ = _assign([[0.6, 0.5, 0.45, 0.4, 0.39, 0.0]])
    assert positive == [True, True, False, False, False, False]
    assert negative == [False, False, False, False, True, True]


def test_low_quality_match_gives_every_gt_its_best_anchors():
    """GT 1 overlaps no anchor by 0.4 but anchors 2 and 3 tie at its best 0.3: both become its positives (ties too),
    anchor 3 although GT 0 overlaps it more (0.35; mmdetection's low-quality step overrides the max-IoU GT)."""
    positive, negative, gt_index = _assign([[0.7, 0.1, 0.0, 0.35], [0.0, 0.2, 0.3, 0.3]])
    assert positive == [True, False, True, True] and negative == [False, True, False, False]
    assert gt_index[0] == 0 and gt_index[2:] == [1, 1]


def test_an_anchor_best_for_two_gts_goes_to_the_last():
    """Two GTs whose best anchor is the same: the later GT takes it (mmdetection's loop over GTs)."""
    positive, _, gt_index = _assign([[0.3, 0.1], [0.2, 0.0]])
    assert positive == [True, False] and gt_index[0] == 1


def test_padding_and_zero_overlap_gts_match_nothing():
    """A padding GT row and a GT that overlaps no anchor (best IoU 0) make no positive; every anchor is negative."""
    positive, negative, _ = _assign([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9]], gt_mask=[True, False])
    assert positive == [False] * 3 and negative == [True] * 3


def test_assigner_labels_classes_background_and_ignored():
    """Anchor boxes [0,0,10,10], [0,0,10,12], [0,0,10,22], [20,20,30,30] and GT [0,0,10,10] of class 1 overlap by 1,
    0.83, 0.45 and 0: target labels 1, 1, -1 (ignored), C = 3 (background); one-hot scores on the positives only."""
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 12], [0, 0, 10, 22], [20, 20, 30, 30]])
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    labels, boxes, scores, fg, _ = MaxIoUAssigner(num_classes=3)(
        torch.zeros(1, 4, 3),
        torch.zeros(1, 4, 4),
        torch.zeros(4, 2),
        torch.ones(1, 1, 1),
        gt,
        torch.ones(1, 1, 1),
        anchors,
    )
    assert labels[0].tolist() == [1, 1, -1, 3] and fg[0].tolist() == [True, True, False, False]
    assert torch.equal(scores[0, :2], torch.tensor([[0.0, 1.0, 0.0]] * 2)) and scores[0, 2:].sum() == 0
    assert torch.equal(boxes[0, 0], gt[0, 0])


def test_focal_and_l1_terms_known_values():
    """One positive (logits 0, class 0), one negative (logits 0), one ignored (logits 5), 2 classes: every counted
    element has p = 0.5, so focal = 0.5² ln 2 x (α + 3 (1 - α)) / N_pos, the ignored anchor adds nothing; L1 = |0.5| +
    |-1| on the positive's deltas."""
    scores = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[0, 2, -1]])
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    fg = torch.tensor([[True, False, False]])
    deltas = torch.tensor([[[0.5, 0.0, 0.0, -1.0], [9.0] * 4, [9.0] * 4]])
    terms = retinanet_terms(scores, deltas, labels, targets, torch.zeros(1, 4), fg, RetinaNetLossWeights())
    per_element = 0.25 * math.log(2)  # (1 - p_t)^2 BCE at p = 0.5
    assert math.isclose(terms["cls"].item(), per_element * (0.25 + 3 * 0.75), rel_tol=1e-6)
    assert terms["cls"].item() == pytest.approx(sigmoid_focal_loss(scores[:, :2], targets[:, :2]).sum().item())
    assert terms["box"].item() == pytest.approx(1.5)


def test_loss_terms_named_finite_and_empty_batch_safe():
    """box (L1 on deltas) and cls (focal) are finite and > 0; without GT box is 0 and focal > 0, with gradients."""
    model = tiny_retinanet().train()
    batch = gt_batch()
    criterion = RetinaNetLoss(model)
    loss, items = criterion(model(batch["img"]), batch)
    assert list(items) == ["box_loss", "cls_loss"] and torch.isfinite(loss).all() and (loss > 0).all()
    empty = {**batch, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    loss, items = criterion(model(batch["img"]), empty)
    assert items["box_loss"] == 0 and items["cls_loss"] > 0
    loss.sum().backward()
    assert model.model[-1].cls_pred.weight.grad.abs().sum() > 0


def test_eval_output_is_decoded_anchor_boxes_and_sigmoid_scores():
    """Eval (B, 4 + C, A), A = 84 cells x 9: the boxes are each anchor's deltas decoded (xywh pixels); export mode
    returns that tensor alone."""
    model = tiny_retinanet().eval()
    decoded, raw = model(torch.rand(2, 3, 64, 64))
    assert decoded.shape == (2, 7, 756) and raw["boxes"].shape == (2, 4, 756) and raw["scores"].shape == (2, 3, 756)
    centres, strides = grid_anchors(raw["feats"], model.stride, 9)
    anchors = anchor_boxes(centres, torch.tensor(anchor_shapes())) * strides
    boxes = decode_deltas(raw["boxes"].transpose(1, 2), anchors)
    xywh = torch.cat(((boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]), -1)
    assert torch.allclose(decoded[:, :4].transpose(1, 2), xywh, atol=1e-4)
    assert torch.allclose(decoded[:, 4:], raw["scores"].sigmoid())
    model.model[-1].export = True
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 7, 756)


def test_head_is_mmdetections_retina_head():
    """No GroupNorm, no level scale, conv biases 0, classifier at the 0.01 prior, k*C and k*4 predictor channels."""
    head = tiny_retinanet().model[-1]
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in head.modules()) and len(head.scales) == 0
    assert head.cls_pred.out_channels == 27 and head.box_pred.out_channels == 36
    assert torch.allclose(head.cls_pred.bias.sigmoid(), torch.tensor(0.01))
    assert head.cls_tower[0].conv.bias.abs().sum() == 0


def test_retinanet_needs_reg_max_1():
    """A YAML without 'reg_max: 1' is refused with the fix."""
    cfg = {**TINY_GFL, "head": [[[2, 3, 4], 1, "RetinaNetDetect", ["nc", 2]]]}
    with pytest.raises(ValueError, match="set 'reg_max: 1'"):
        DenseDetectionModel(cfg, verbose=False)


@pytest.mark.parametrize(("name", "width"), [("retinanet-yolov8n.yaml", 64), ("retinanet-r18.yaml", 128)])
def test_shipped_yaml_builds(name, width):
    """retinanet-yolov8n.yaml (scale n of retinanet-yolov8.yaml) and retinanet-r18.yaml build offline: strides
    8/16/32, one width, 9 x nc classifier channels."""
    model = DenseDetectionModel(name, nc=5, verbose=False)
    head = model.model[-1]
    assert type(head) is RetinaNetDetect and head.stride.tolist() == [8.0, 16.0, 32.0]
    assert head.cls_pred.in_channels == width and head.cls_pred.out_channels == 45 and head.stacked_convs == 4
    assert resolve_model_yaml(name) == MODELS_DIR / name and dense_head_name(name) == "RetinaNetDetect"


def test_anchor_settings_come_from_the_yaml_row():
    """[nc, stacked_convs, octave_base_scale, scales_per_octave, ratios] = [nc, 2, 3, 2, [1.0]]: 2 square anchors of
    3 and 3 sqrt(2) strides per cell, and predictors sized for them."""
    cfg = {**TINY_GFL, "reg_max": 1, "head": [[[2, 3, 4], 1, "RetinaNetDetect", ["nc", 2, 3, 2, [1.0]]]]}
    head = DenseDetectionModel(cfg, verbose=False).model[-1]
    assert head.anchors_per_cell == 2 and head.box_pred.out_channels == 8 and head.cls_pred.out_channels == 6
    assert torch.allclose(torch.tensor(head.anchor_shapes), torch.tensor([[3.0, 3.0], [3 * 2**0.5, 3 * 2**0.5]]))


def test_tower_norm_from_the_yaml_row_trains():
    """A sixth YAML argument True gives GroupNorm towers (convs without bias, as GFL's and FCOS's), the default 9
    anchors, and a loss that back-propagates into the towers."""
    cfg = {
        **TINY_GFL,
        "reg_max": 1,
        "head": [[[2, 3, 4], 1, "RetinaNetDetect", ["nc", 2, 4.0, 3, [0.5, 1.0, 2.0], True]]],
    }
    model = DenseDetectionModel(cfg, verbose=False)
    model.args = get_cfg()
    head = model.model[-1]
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in head.modules()) == 4 and head.anchors_per_cell == 9
    assert head.cls_tower[0].conv.bias is None
    loss, _ = model.loss(gt_batch())
    loss.sum().backward()
    assert head.cls_tower[0].norm.weight.grad.abs().sum() > 0
