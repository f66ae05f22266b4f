"""FCOS's training loss and label assignment (Tian et al., ICCV 2019, https://arxiv.org/abs/1904.01355; mmdetection's
``FCOSHead`` with its "tricks" config: centre sampling, GIoU, ``norm_on_bbox``, ``centerness_on_reg``).

Assignment: an anchor point is a candidate for a GT when it lies inside the GT's centre region (a square of
``radius`` strides around the GT centre, clipped to the GT box) and the largest of its ltrb distances to the GT falls
in its level's regress range (P3 (0, 64], P4 (64, 128], P5 (128, inf) pixels); among several candidates it takes the
GT of smallest area. Terms: sigmoid focal loss (α 0.25, γ 2, torchvision's) on every anchor and class / N_pos; GIoU
on positives weighted by their centerness target / the targets' sum; centerness BCE on positives / N_pos; weights
1.0 each. Centerness target: ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.

YOLO adaptation: three levels (mmdetection's FCOS has P3-P7 and ranges up to 512 px), so P5 takes everything above
128 px. Ultralytics' criterion interface; items ``box_loss`` (GIoU), ``cls_loss`` (focal), ``ctr_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss
from ultralytics.utils.loss import v8DetectionLoss
from ultralytics.utils.tal import TaskAlignedAssigner, bbox2dist, make_anchors

from yolokd.models.atss import empty_assignment
from yolokd.models.gfl_loss import padded_gt, weighted_giou_loss

REGRESS_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, float("inf")))  # pixels, P3-P5


def centerness_target(ltrb: Tensor) -> Tensor:
    """(..., 4) ltrb distances (> 0, any unit) -> (...) FCOS centerness in [0, 1]."""
    left_right, top_bottom = ltrb[..., [0, 2]], ltrb[..., [1, 3]]
    ratio = (left_right.amin(-1) / left_right.amax(-1)) * (top_bottom.amin(-1) / top_bottom.amax(-1))
    return ratio.clamp(min=0).sqrt()


def fcos_candidates(
    points: Tensor, strides: Tensor, ranges: Tensor, gt_boxes: Tensor, radius: float
) -> tuple[Tensor, Tensor]:
    """FCOS's candidate test for every (image, GT, anchor).

    Args:
        points: (A, 2) anchor centres, pixels.
        strides: (A, 1) stride of each anchor's level, pixels.
        ranges: (A, 2) regress range (low, high] of each anchor's level, pixels.
        gt_boxes: (B, M, 4) GT boxes xyxy, pixels.
        radius: centre-sampling radius in strides (<= 0: the whole box).

    Returns:
        candidate: (B, M, A) bool, inside the GT's centre region and the largest ltrb within the level's range.
        ltrb: (B, M, A, 4) distances from each anchor to each GT's sides, pixels.
    """
    lt, rb = gt_boxes[..., None, :2], gt_boxes[..., None, 2:]  # (B, M, 1, 2)
    ltrb = torch.cat((points - lt, rb - points), -1)  # (B, M, A, 4)
    if radius > 0:
        centre, reach = (lt + rb) / 2, strides * radius  # (B, M, 1, 2), (A, 1)
        region = torch.cat((torch.maximum(centre - reach, lt), torch.minimum(centre + reach, rb)), -1)
        inside = torch.cat((points - region[..., :2], region[..., 2:] - points), -1).amin(-1) > 0
    else:
        inside = ltrb.amin(-1) > 0
    reach_max = ltrb.amax(-1)
    in_range = (reach_max > ranges[:, 0]) & (reach_max <= ranges[:, 1])
    return inside & in_range, ltrb


class FCOSAssigner(TaskAlignedAssigner):
    """FCOS label assignment with the interface of Ultralytics' ``TaskAlignedAssigner`` (reuses its ``get_targets``).

    Args:
        num_classes: C.
        radius: centre-sampling radius in strides (mmdetection: 1.5).
    """

    def __init__(self, num_classes: int, radius: float = 1.5) -> None:
        super().__init__(topk=1, num_classes=num_classes)
        self.radius = radius

    @torch.no_grad()
    def forward(
        self,
        pd_scores: Tensor,
        pd_bboxes: Tensor,
        anc_points: Tensor,
        gt_labels: Tensor,
        gt_bboxes: Tensor,
        mask_gt: Tensor,
        anchor_strides: Tensor,
        anchor_ranges: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Assign GT boxes to anchor points.

        Args:
            pd_scores: (B, A, C) predicted class probabilities (only shape and dtype are read).
            pd_bboxes: (B, A, 4) predicted boxes (only shape and dtype are read).
            anc_points: (A, 2) anchor centres, pixels.
            gt_labels: (B, M, 1) GT classes.
            gt_bboxes: (B, M, 4) GT boxes xyxy, pixels.
            mask_gt: (B, M, 1) 1 for real GT rows.
            anchor_strides: (A, 1) strides, pixels.
            anchor_ranges: (A, 2) regress range of each anchor's level, pixels.

        Returns:
            target_labels (B, A), target_bboxes (B, A, 4) xyxy pixels, target_scores (B, A, C) one-hot on positives,
            fg_mask (B, A) bool, target_gt_idx (B, A) long.
        """
        self.bs, self.n_max_boxes = pd_scores.shape[0], gt_bboxes.shape[1]
        if self.n_max_boxes == 0:
            return empty_assignment(pd_scores, pd_bboxes, self.num_classes)
        candidate, _ = fcos_candidates(anc_points, anchor_strides, anchor_ranges, gt_bboxes, self.radius)
        candidate &= mask_gt.bool()
        area = ((gt_bboxes[..., 2] - gt_bboxes[..., 0]) * (gt_bboxes[..., 3] - gt_bboxes[..., 1]))[..., None]
        area = torch.where(candidate, area, torch.inf)  # (B, M, A)
        smallest, target_gt_idx = area.min(1)  # the smallest-area candidate GT of each anchor
        fg_mask = torch.isfinite(smallest)
        target_labels, target_bboxes, target_scores = self.get_targets(gt_labels, gt_bboxes, target_gt_idx, fg_mask)
        return target_labels, target_bboxes, target_scores.to(pd_scores.dtype), fg_mask, target_gt_idx


@dataclass(frozen=True)
class FCOSLossWeights:
    """Term weights and settings of the FCOS loss (mmdetection's FCOS with tricks)."""

    focal: float = 1.0
    giou: float = 1.0
    centerness: float = 1.0
    alpha: float = 0.25
    gamma: float = 2.0
    radius: float = 1.5
    regress_ranges: tuple[tuple[float, float], ...] = REGRESS_RANGES


class FCOSLoss(v8DetectionLoss):
    """FCOS's training loss for an :class:`~yolokd.models.fcos.FCOSDetect` model (Ultralytics criterion interface)."""

    def __init__(self, model: nn.Module, weights: FCOSLossWeights | None = None) -> None:
        super().__init__(model)
        self.weights = weights or FCOSLossWeights()
        if len(self.weights.regress_ranges) != len(self.stride):
            raise ValueError(
                f"FCOS has {len(self.weights.regress_ranges)} regress ranges for {len(self.stride)} levels; give one "
                "(low, high] pixel range per level"
            )
        self.assigner = FCOSAssigner(self.nc, self.weights.radius)
        self.loss_names = ("box_loss", "cls_loss", "ctr_loss")

    def get_assigned_targets_and_loss(self, preds: dict[str, Tensor], batch: dict) -> tuple:
        """GIoU, focal and centerness terms (weighted, not x batch size) + the assignment, as ``v8DetectionLoss``."""
        pred_distances = preds["boxes"].permute(0, 2, 1).contiguous()  # (B, A, 4) ltrb grid units
        pred_scores = preds["scores"].permute(0, 2, 1).contiguous()  # (B, A, C)
        pred_centerness = preds["centerness"].permute(0, 2, 1).squeeze(-1)  # (B, A)
        feats = preds["feats"]
        anchor_points, stride_tensor = make_anchors(feats, self.stride, 0.5)
        level_sizes = [f.shape[2] * f.shape[3] for f in feats]
        ranges = torch.tensor(self.weights.regress_ranges, device=self.device, dtype=pred_scores.dtype)
        anchor_ranges = ranges.repeat_interleave(torch.tensor(level_sizes, device=self.device), dim=0)  # (A, 2)
        batch_size = pred_scores.shape[0]
        gt_labels, gt_bboxes, mask_gt = padded_gt(self, batch, feats, batch_size, pred_scores.dtype)
        pred_bboxes = self.bbox_decode(anchor_points, pred_distances)  # (B, A, 4) xyxy grid units

        _, target_bboxes, target_scores, fg_mask, target_gt_idx = self.assigner(
            pred_scores.detach().sigmoid(),
            (pred_bboxes.detach() * stride_tensor).type(gt_bboxes.dtype),
            anchor_points * stride_tensor,
            gt_labels,
            gt_bboxes,
            mask_gt,
            stride_tensor,
            anchor_ranges,
        )
        w = self.weights
        loss = torch.zeros(3, device=self.device)  # box (GIoU), cls (focal), centerness
        num_pos = fg_mask.sum().clamp(min=1)
        focal = sigmoid_focal_loss(pred_scores, target_scores, alpha=w.alpha, gamma=w.gamma, reduction="sum")
        loss[1] = w.focal * focal / num_pos
        target_grid = (target_bboxes / stride_tensor)[fg_mask]  # (P, 4) xyxy grid units
        points = anchor_points.expand(batch_size, -1, -1)[fg_mask]
        centerness = centerness_target(bbox2dist(points, target_grid))  # (P,)
        centerness_sum = centerness.sum().clamp(min=1e-6)
        loss[0] = w.giou * weighted_giou_loss(pred_bboxes[fg_mask], target_grid, centerness) / centerness_sum
        bce = F.binary_cross_entropy_with_logits(pred_centerness[fg_mask], centerness, reduction="sum")
        loss[2] = w.centerness * bce / num_pos
        return (
            (fg_mask, target_gt_idx, target_bboxes, anchor_points, stride_tensor),
            loss,
            dict(zip(self.loss_names, loss.detach(), strict=True)),
        )
