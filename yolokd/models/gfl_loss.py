"""Generalized Focal Loss: Learning Qualified and Distributed Bounding Boxes for Dense Object Detection.

Li et al., NeurIPS 2020, https://arxiv.org/abs/2006.04388 (mmdetection's ``GFLHead`` for the reference settings).

- Quality focal loss (QFL): the classifier predicts a joint class-IoU score; every anchor and class
  ``BCE(σ(x), y) * |y - σ(x)|^β`` with ``y`` = IoU(predicted box, assigned GT) on the assigned class of a positive,
  0 elsewhere; β = 2; summed and divided by N_pos. The modulating factor keeps its gradient (as mmdetection).
- Distribution focal loss (DFL): each box side is a distribution over R bins; cross-entropy towards the two bins
  around the target distance (Ultralytics' ``DFLoss``), mean over the four sides.
- GIoU loss on the boxes decoded from the distributions (their expectation).
- Box and DFL terms of a positive are weighted by its detached top class score ``max_c σ(x_c)``, and divided by the
  sum of those weights (clamped at 1, as mmdetection); loss weights QFL 1.0, GIoU 2.0, DFL 0.25 (mmdetection's GFL).
- Assignment: ATSS (``yolokd.models.atss``), k = 9, anchor boxes 8 strides wide.

YOLO adaptation: the loss has Ultralytics' criterion interface (``(preds, batch) -> (loss vector x batch size,
items)``, items named ``box_loss``/``cls_loss``/``dfl_loss`` for GIoU/QFL/DFL) so Ultralytics' trainer, validator
and yolokd's criterion use it as they use ``v8DetectionLoss``; Ultralytics' ``box``/``cls``/``dfl`` gains are not
used (the weights above are GFL's). Distances are in grid units (stride-normalised, as mmdetection's GFL); R bins
cover 0..R-1 (Ultralytics' DFL; mmdetection's ``reg_max=16`` is 17 bins).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from ultralytics.utils.loss import DFLoss, v8DetectionLoss
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.tal import bbox2dist, make_anchors

from yolokd.models.atss import ATSSAssigner


def quality_focal_loss(logits: Tensor, quality: Tensor, beta: float = 2.0) -> Tensor:
    """QFL per element, no reduction: ``BCE(σ(x), y) * |y - σ(x)|^β``.

    Args:
        logits: (..., C) class logits (pre-sigmoid).
        quality: (..., C) soft targets in [0, 1]: IoU quality on a positive's class, 0 elsewhere.
        beta: β, the focusing exponent.

    Returns:
        (..., C) loss; the modulating factor is not detached.
    """
    modulation = (quality - logits.sigmoid()).abs().pow(beta)
    return F.binary_cross_entropy_with_logits(logits, quality, reduction="none") * modulation


def weighted_giou_loss(pred_boxes: Tensor, target_boxes: Tensor, weight: Tensor) -> Tensor:
    """``Σ w (1 - GIoU)``: (N, 4) predicted and target boxes xyxy (same units), (N,) weights -> 0-d sum."""
    giou = bbox_iou(pred_boxes, target_boxes, xywh=False, GIoU=True).squeeze(-1)
    return ((1.0 - giou) * weight).sum()


def padded_gt(
    loss: v8DetectionLoss, batch: dict, feats: list[Tensor], batch_size: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """The batch's GT as Ultralytics' assigners take it: (B, M, 1) labels, (B, M, 4) xyxy pixels, (B, M, 1) mask.

    The steps of ``v8DetectionLoss``'s own call (its ``preprocess`` pads per image and scales to pixels), which keeps
    them inline; GFL's and FCOS's losses share this copy.
    """
    imgsz = torch.tensor(feats[0].shape[2:], device=loss.device, dtype=dtype) * loss.stride[0]
    targets = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"]), 1)
    targets = loss.preprocess(targets.to(loss.device), batch_size, scale_tensor=imgsz[[1, 0, 1, 0]])
    gt_labels, gt_bboxes = targets.split((1, 4), 2)
    return gt_labels, gt_bboxes, gt_bboxes.sum(2, keepdim=True).gt_(0.0)


@dataclass(frozen=True)
class GFLLossWeights:
    """Term weights and settings of the GFL loss (mmdetection's ``gfl_r50_fpn_1x_coco``)."""

    qfl: float = 1.0
    giou: float = 2.0
    dfl: float = 0.25
    beta: float = 2.0
    atss_topk: int = 9
    anchor_scale: float = 8.0


class GFLLoss(v8DetectionLoss):
    """GFL's training loss for a :class:`~yolokd.models.gfl.GFLDetect` model (Ultralytics criterion interface).

    Reuses ``v8DetectionLoss``'s target padding, DFL decoding and call convention; replaces its assigner (ATSS) and
    its box/cls/dfl terms (GIoU, QFL, DFL weighted as in GFL).
    """

    def __init__(self, model: nn.Module, weights: GFLLossWeights | None = None) -> None:
        super().__init__(model)
        self.weights = weights or GFLLossWeights()
        self.assigner = ATSSAssigner(self.nc, self.weights.atss_topk, self.weights.anchor_scale)
        self.dfl_loss = DFLoss(self.reg_max)
        self.loss_names = ("box_loss", "cls_loss", "dfl_loss")

    def get_assigned_targets_and_loss(self, preds: dict[str, Tensor], batch: dict) -> tuple:
        """GIoU, QFL and DFL (weighted, not x batch size) + the assignment, in ``v8DetectionLoss``'s return format."""
        pred_distri = preds["boxes"].permute(0, 2, 1).contiguous()  # (B, A, 4R)
        pred_scores = preds["scores"].permute(0, 2, 1).contiguous()  # (B, A, C)
        feats = preds["feats"]
        anchor_points, stride_tensor = make_anchors(feats, self.stride, 0.5)  # grid units, (A, 1)
        level_sizes = [f.shape[2] * f.shape[3] for f in feats]
        batch_size = pred_scores.shape[0]
        gt_labels, gt_bboxes, mask_gt = padded_gt(self, batch, feats, batch_size, pred_scores.dtype)
        pred_bboxes = self.bbox_decode(anchor_points, pred_distri)  # (B, A, 4) xyxy grid units

        _, target_bboxes, target_scores, fg_mask, target_gt_idx = self.assigner(
            pred_scores.detach().sigmoid(),
            (pred_bboxes.detach() * stride_tensor).type(gt_bboxes.dtype),
            anchor_points * stride_tensor,
            gt_labels,
            gt_bboxes,
            mask_gt,
            stride_tensor,
            level_sizes,
        )
        w = self.weights
        loss = torch.zeros(3, device=self.device)  # box (GIoU), cls (QFL), dfl
        num_pos = fg_mask.sum().clamp(min=1)
        qfl = quality_focal_loss(pred_scores, target_scores.to(pred_scores.dtype), w.beta).sum()
        loss[1] = w.qfl * qfl / num_pos

        box_weight = pred_scores.detach().sigmoid().amax(-1)[fg_mask]  # (P,) top class score of each positive
        avg_factor = box_weight.sum().clamp(min=1)
        target_grid = (target_bboxes / stride_tensor)[fg_mask]  # (P, 4) xyxy grid units
        loss[0] = w.giou * weighted_giou_loss(pred_bboxes[fg_mask], target_grid, box_weight) / avg_factor
        target_ltrb = bbox2dist(anchor_points.expand(batch_size, -1, -1)[fg_mask], target_grid)  # (P, 4)
        dfl = self.dfl_loss(pred_distri[fg_mask].view(-1, self.reg_max), target_ltrb).squeeze(-1)  # (P,)
        loss[2] = w.dfl * (dfl * box_weight).sum() / avg_factor
        return (
            (fg_mask, target_gt_idx, target_bboxes, anchor_points, stride_tensor),
            loss,
            dict(zip(self.loss_names, loss.detach(), strict=True)),
        )
