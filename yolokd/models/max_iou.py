"""RetinaNet's IoU-threshold label assignment (mmdetection's ``MaxIoUAssigner``, RetinaNet settings: positive at
IoU >= 0.5, negative below 0.4, ignored between, low-quality matches allowed with ``min_pos_iou`` 0).

Per anchor box: its best GT by IoU; positive if that IoU >= ``pos_iou``, negative if < ``neg_iou``, else ignored (no
loss at all). Low-quality matches: every GT also takes the anchors whose IoU with it equals its own best IoU (ties
included: mmdetection's ``gt_max_assign_all``), even below the thresholds, so every GT has a positive; an anchor that is
some GT's best this way takes that GT (the last such GT when several, as mmdetection's loop over GTs). One deviation:
mmdetection also does this for a GT whose best IoU is 0 when ``min_pos_iou`` is 0, which makes every anchor that
misses the GT (nearly all) positive for it; here such a GT gets no low-quality match.

IoUs by ``torchvision.ops.box_iou``; batched over images and GTs (padding GT rows never match). The assigner has the
call signature and outputs of Ultralytics' ``TaskAlignedAssigner`` (yolokd's criterion reads its assignment from them),
with the anchor boxes as one more argument; ignored anchors have target label -1 and negatives C (the background,
mmdetection's convention), so the loss can leave ignored anchors out.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou
from ultralytics.utils.tal import TaskAlignedAssigner

from yolokd.models.atss import empty_assignment


def max_iou_assignment(
    overlaps: Tensor, gt_mask: Tensor, pos_iou: float = 0.5, neg_iou: float = 0.4, min_pos_iou: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Positives, negatives and matched GT of every anchor from GT-anchor IoUs.

    Args:
        overlaps: (B, M, A) IoU of each GT with each anchor box.
        gt_mask: (B, M) bool, True for real GT rows.
        pos_iou: positive at best IoU >= this.
        neg_iou: negative at best IoU < this.
        min_pos_iou: a GT's low-quality matches need its best IoU >= this (and > 0).

    Returns:
        positive (B, A) bool, negative (B, A) bool (neither = ignored), gt_index (B, A) long (valid where positive).
    """
    overlaps = overlaps.masked_fill(~gt_mask.unsqueeze(-1), -1.0)  # padding rows: below every real IoU
    best_iou, gt_index = overlaps.max(1)  # (B, A)
    gt_best = overlaps.amax(2, keepdim=True)  # (B, M, 1)
    low_quality = (overlaps == gt_best) & (gt_best > 0) & (gt_best >= min_pos_iou)  # (B, M, A)
    numbers = torch.arange(1, overlaps.shape[1] + 1, device=overlaps.device).view(1, -1, 1)
    low_quality_gt = (low_quality * numbers).amax(1)  # (B, A): 1 + the last GT matching the anchor, 0 for none
    matched = low_quality_gt > 0
    gt_index = torch.where(matched, low_quality_gt - 1, gt_index)
    positive = (best_iou >= pos_iou) | matched
    negative = (best_iou < neg_iou) & ~positive
    return positive, negative, gt_index


class MaxIoUAssigner(TaskAlignedAssigner):
    """IoU-threshold assignment with the interface of Ultralytics' ``TaskAlignedAssigner`` (reuses ``get_targets``).

    Args:
        num_classes: C.
        pos_iou: positive IoU threshold (RetinaNet: 0.5).
        neg_iou: negative IoU threshold (RetinaNet: 0.4).
        min_pos_iou: least best IoU for a GT's low-quality matches (RetinaNet: 0).
    """

    def __init__(self, num_classes: int, pos_iou: float = 0.5, neg_iou: float = 0.4, min_pos_iou: float = 0.0) -> None:
        super().__init__(topk=1, num_classes=num_classes)
        if not 0 <= neg_iou <= pos_iou <= 1:
            raise ValueError(f"MaxIoUAssigner needs 0 <= neg_iou <= pos_iou <= 1, got {neg_iou} and {pos_iou}")
        self.pos_iou, self.neg_iou, self.min_pos_iou = pos_iou, neg_iou, min_pos_iou

    @torch.no_grad()
    def forward(
        self,
        pd_scores: Tensor,
        pd_bboxes: Tensor,
        anc_points: Tensor,
        gt_labels: Tensor,
        gt_bboxes: Tensor,
        mask_gt: Tensor,
        anchor_boxes: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Assign GT boxes to anchor boxes.

        Args:
            pd_scores: (B, A, C) predicted class probabilities (only shape and dtype are read).
            pd_bboxes: (B, A, 4) predicted boxes (only shape and dtype are read).
            anc_points: (A, 2) anchor centres, pixels (not read: the anchor boxes decide).
            gt_labels: (B, M, 1) GT classes.
            gt_bboxes: (B, M, 4) GT boxes xyxy, pixels.
            mask_gt: (B, M, 1) 1 for real GT rows.
            anchor_boxes: (A, 4) anchor boxes xyxy, pixels.

        Returns:
            target_labels (B, A) long: the class on positives, C on negatives, -1 on ignored anchors;
            target_bboxes (B, A, 4) xyxy pixels; target_scores (B, A, C) one-hot on positives; fg_mask (B, A) bool;
            target_gt_idx (B, A) long.
        """
        self.bs, self.n_max_boxes = pd_scores.shape[0], gt_bboxes.shape[1]
        if self.n_max_boxes == 0:
            return empty_assignment(pd_scores, pd_bboxes, self.num_classes)
        overlaps = box_iou(gt_bboxes.reshape(-1, 4), anchor_boxes.to(gt_bboxes.dtype))
        overlaps = overlaps.view(self.bs, self.n_max_boxes, -1)
        positive, negative, gt_index = max_iou_assignment(
            overlaps, mask_gt.squeeze(-1).bool(), self.pos_iou, self.neg_iou, self.min_pos_iou
        )
        labels, target_bboxes, target_scores = self.get_targets(gt_labels, gt_bboxes, gt_index, positive)
        labels = torch.where(positive, labels, torch.where(negative, self.num_classes, -1))
        return labels, target_bboxes, target_scores.to(pd_scores.dtype), positive, gt_index
