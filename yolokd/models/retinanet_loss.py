"""RetinaNet's training loss (Focal Loss for Dense Object Detection, Lin et al., ICCV 2017,
https://arxiv.org/abs/1708.02002; mmdetection's ``retinanet_r50_fpn_1x_coco``).

- Classification: sigmoid focal loss (α 0.25, γ 2; ``torchvision.ops.sigmoid_focal_loss``) on every positive and
  negative anchor and class (ignored anchors, best IoU in [0.4, 0.5), contribute nothing), summed / N_pos.
- Box regression: L1 on the deltas (``yolokd.models.anchors``) of the positives, summed over the four deltas / N_pos
  (mmdetection's ``L1Loss`` with ``reg_decoded_bbox=False``). The reference config's choice, kept so that a
  RetinaNet student trains as the papers' RetinaNet baselines (BCKD, CrossKD, DFD report mmdetection's); GIoU on
  decoded boxes is what the KD terms use (BCKD's and CrossKD's localisation KD decode both models' boxes), so the GT
  term and the KD terms do not share one form, as in the papers.
- Assignment: ``MaxIoUAssigner`` (IoU >= 0.5 positive, < 0.4 negative, low-quality matches allowed).
- N_pos: positive anchors of the batch, at least 1. Weights 1.0 and 1.0 (mmdetection's).

YOLO adaptation: Ultralytics' criterion interface, items ``box_loss`` (L1 on deltas) and ``cls_loss`` (focal);
three levels P3-P5 (mmdetection's RetinaNet has P3-P7: objects much larger than P5's 128-203 px anchors match
their best anchors through the low-quality rule only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss
from ultralytics.utils.loss import v8DetectionLoss

from yolokd.models.anchors import anchor_boxes, decode_deltas, encode_deltas, grid_anchors
from yolokd.models.gfl_loss import padded_gt
from yolokd.models.max_iou import MaxIoUAssigner


@dataclass(frozen=True)
class RetinaNetLossWeights:
    """Term weights and settings of the RetinaNet loss (mmdetection's ``retinanet_r50_fpn_1x_coco``)."""

    focal: float = 1.0
    l1: float = 1.0
    alpha: float = 0.25
    gamma: float = 2.0
    pos_iou: float = 0.5
    neg_iou: float = 0.4
    min_pos_iou: float = 0.0


def retinanet_terms(
    pred_scores: Tensor,
    pred_deltas: Tensor,
    target_labels: Tensor,
    target_scores: Tensor,
    target_deltas: Tensor,
    fg_mask: Tensor,
    weights: RetinaNetLossWeights,
) -> dict[str, Tensor]:
    """The two RetinaNet terms of an assigned batch, weighted and divided by N_pos.

    Args:
        pred_scores: (B, A, C) class logits.
        pred_deltas: (B, A, 4) predicted deltas.
        target_labels: (B, A) long, class on positives, C on negatives, -1 on ignored anchors.
        target_scores: (B, A, C) one-hot class targets of the positives (0 elsewhere).
        target_deltas: (P, 4) deltas of the positives' GT boxes to their anchors, P = fg_mask.sum().
        fg_mask: (B, A) bool, positives.
        weights: term weights, α and γ.

    Returns:
        ``{"box": 0-d L1, "cls": 0-d focal}``.
    """
    num_pos = fg_mask.sum().clamp(min=1)
    focal = sigmoid_focal_loss(pred_scores, target_scores, alpha=weights.alpha, gamma=weights.gamma, reduction="none")
    counted = (target_labels >= 0).unsqueeze(-1)  # positives and negatives; ignored anchors have no loss
    cls_term = weights.focal * (focal * counted).sum() / num_pos
    box_term = weights.l1 * (pred_deltas[fg_mask] - target_deltas).abs().sum() / num_pos
    return {"box": box_term, "cls": cls_term}


class RetinaNetLoss(v8DetectionLoss):
    """RetinaNet's training loss for a :class:`~yolokd.models.retinanet.RetinaNetDetect` model (Ultralytics criterion
    interface)."""

    def __init__(self, model: nn.Module, weights: RetinaNetLossWeights | None = None) -> None:
        super().__init__(model)
        self.weights = weights or RetinaNetLossWeights()
        head = model.model[-1]
        self.anchors_per_cell = head.anchors_per_cell
        self.anchor_shapes = torch.tensor(head.anchor_shapes, device=self.device)  # (k, 2) strides
        w = self.weights
        self.assigner = MaxIoUAssigner(self.nc, w.pos_iou, w.neg_iou, w.min_pos_iou)
        self.loss_names = ("box_loss", "cls_loss")

    def get_assigned_targets_and_loss(self, preds: dict[str, Tensor], batch: dict) -> tuple:
        """L1 and focal terms (weighted, not x batch size) + the assignment, in ``v8DetectionLoss``'s return format."""
        pred_deltas = preds["boxes"].permute(0, 2, 1).contiguous()  # (B, A, 4)
        pred_scores = preds["scores"].permute(0, 2, 1).contiguous()  # (B, A, C)
        feats = preds["feats"]
        centres, stride_tensor = grid_anchors(feats, self.stride, self.anchors_per_cell)  # grid units, (A, 1)
        anchors = anchor_boxes(centres, self.anchor_shapes.to(centres)) * stride_tensor  # (A, 4) xyxy pixels
        batch_size = pred_scores.shape[0]
        gt_labels, gt_bboxes, mask_gt = padded_gt(self, batch, feats, batch_size, pred_scores.dtype)

        target_labels, target_bboxes, target_scores, fg_mask, target_gt_idx = self.assigner(
            pred_scores.detach().sigmoid(),
            decode_deltas(pred_deltas.detach(), anchors).type(gt_bboxes.dtype),
            centres * stride_tensor,
            gt_labels,
            gt_bboxes,
            mask_gt,
            anchors,
        )
        positive_anchors = anchors.expand(batch_size, -1, -1)[fg_mask]
        target_deltas = encode_deltas(positive_anchors, target_bboxes[fg_mask].to(anchors.dtype))
        terms = retinanet_terms(
            pred_scores,
            pred_deltas,
            target_labels,
            target_scores.to(pred_scores.dtype),
            target_deltas,
            fg_mask,
            self.weights,
        )
        loss = torch.stack((terms["box"], terms["cls"])).float()
        return (
            (fg_mask, target_gt_idx, target_bboxes, centres, stride_tensor),
            loss,
            dict(zip(self.loss_names, loss.detach(), strict=True)),
        )
