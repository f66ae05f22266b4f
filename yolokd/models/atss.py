"""ATSS: Bridging the Gap Between Anchor-based and Anchor-free Detection via Adaptive Training Sample Selection.

Zhang et al., CVPR 2020, https://arxiv.org/abs/1912.02424. GFL's label assignment (and FCOS's in the ATSS paper).

Per GT box g: on each level the k anchors whose centres are closest to g's centre are candidates; the IoU threshold
is the mean + standard deviation of the candidates' IoUs with g (anchor boxes, not predictions); candidates at or
above it whose centre lies inside g are positives. An anchor positive for several GTs takes the one it overlaps most.

YOLO adaptation: anchor points are Ultralytics' cell centres (index + 0.5, the GFL code of mmdetection puts them at
the cell corner); an anchor's box is a square of side ``anchor_scale * stride`` around it (GFL: 8). The assigner has
the call signature and outputs of Ultralytics' ``TaskAlignedAssigner`` (so yolokd reads its assignment the same way),
and its target scores are GFL's quality targets: IoU(predicted box, assigned GT) on the assigned class.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou
from ultralytics.utils.metrics import bbox_iou
from ultralytics.utils.tal import TaskAlignedAssigner


def anchor_boxes(anchor_points: Tensor, anchor_strides: Tensor, anchor_scale: float) -> Tensor:
    """(A, 2) anchor centres + (A, 1) strides, pixels -> (A, 4) square anchor boxes xyxy, pixels."""
    half = anchor_strides * (anchor_scale / 2)
    return torch.cat((anchor_points - half, anchor_points + half), -1)


def atss_candidates(distances: Tensor, level_sizes: list[int], topk: int) -> Tensor:
    """(B, M, A) centre distances -> (B, M, K) indices of the ``topk`` closest anchors of each level (K = Σ_l k_l).

    A level with fewer than ``topk`` anchors gives all of them. Indices never repeat (each comes from its own level).
    """
    candidates, start = [], 0
    for size in level_sizes:  # L iterations: levels have different sizes, there is no batched per-level top-k
        level = distances[..., start : start + size]
        candidates.append(level.topk(min(topk, size), dim=-1, largest=False).indices + start)
        start += size
    return torch.cat(candidates, -1)


def atss_positive_mask(
    overlaps: Tensor, distances: Tensor, anchor_points: Tensor, gt_boxes: Tensor, level_sizes: list[int], topk: int
) -> Tensor:
    """ATSS positives per (image, GT, anchor), before resolving anchors claimed by several GTs.

    Args:
        overlaps: (B, M, A) IoU of each GT with each anchor box.
        distances: (B, M, A) distance of each anchor centre to each GT centre, pixels.
        anchor_points: (A, 2) anchor centres, pixels.
        gt_boxes: (B, M, 4) GT boxes xyxy, pixels.
        level_sizes: anchors per level, in the order of A.
        topk: k, candidates per level (ATSS: 9).

    Returns:
        (B, M, A) bool, candidate with IoU >= mean + std of its GT's candidates and centre inside the GT (by > 0.01 px).
    """
    candidates = atss_candidates(distances, level_sizes, topk)  # (B, M, K)
    candidate_overlaps = overlaps.gather(-1, candidates)
    threshold = candidate_overlaps.mean(-1, keepdim=True) + candidate_overlaps.std(-1, keepdim=True)  # unbiased
    points = anchor_points[candidates]  # (B, M, K, 2)
    sides = torch.cat((points - gt_boxes[..., None, :2], gt_boxes[..., None, 2:] - points), -1)  # (B, M, K, 4) ltrb
    is_positive = (candidate_overlaps >= threshold) & (sides.amin(-1) > 0.01)
    return torch.zeros_like(overlaps, dtype=torch.bool).scatter_(-1, candidates, is_positive)


def empty_assignment(pd_scores: Tensor, pd_bboxes: Tensor, num_classes: int) -> tuple[Tensor, ...]:
    """A batch without GT boxes: every anchor background (label C), no targets, no positives; the assigners' outputs."""
    return (
        torch.full_like(pd_scores[..., 0], num_classes, dtype=torch.long),
        torch.zeros_like(pd_bboxes),
        torch.zeros_like(pd_scores),
        torch.zeros_like(pd_scores[..., 0], dtype=torch.bool),
        torch.zeros_like(pd_scores[..., 0], dtype=torch.long),
    )


class ATSSAssigner(TaskAlignedAssigner):
    """ATSS label assignment with the interface of Ultralytics' ``TaskAlignedAssigner``.

    Reuses its ``select_highest_overlaps`` (the max-IoU GT of an anchor claimed by several) and ``get_targets``.

    Args:
        num_classes: C.
        topk: k, candidates per level.
        anchor_scale: side of an anchor box in strides (GFL's ``octave_base_scale``).
    """

    def __init__(self, num_classes: int, topk: int = 9, anchor_scale: float = 8.0) -> None:
        super().__init__(topk=topk, num_classes=num_classes)
        self.anchor_scale = anchor_scale

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
        level_sizes: list[int],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Assign GT boxes to anchors.

        Args:
            pd_scores: (B, A, C) predicted class probabilities (only their shape and dtype are read).
            pd_bboxes: (B, A, 4) predicted boxes xyxy, pixels, detached (for the IoU quality targets).
            anc_points: (A, 2) anchor centres, pixels.
            gt_labels: (B, M, 1) GT classes.
            gt_bboxes: (B, M, 4) GT boxes xyxy, pixels (padding rows are zeros).
            mask_gt: (B, M, 1) 1 for real GT rows.
            anchor_strides: (A, 1) stride of each anchor's level, pixels.
            level_sizes: anchors per level, in the order of A.

        Returns:
            target_labels (B, A) long, target_bboxes (B, A, 4) xyxy pixels, target_scores (B, A, C) float IoU quality
            on the assigned class (0 elsewhere and on background), fg_mask (B, A) bool, target_gt_idx (B, A) long.
        """
        self.bs, self.n_max_boxes = pd_scores.shape[0], gt_bboxes.shape[1]
        if self.n_max_boxes == 0:
            return empty_assignment(pd_scores, pd_bboxes, self.num_classes)
        boxes = anchor_boxes(anc_points, anchor_strides, self.anchor_scale)
        overlaps = box_iou(gt_bboxes.reshape(-1, 4), boxes).view(self.bs, self.n_max_boxes, -1)
        gt_centres = (gt_bboxes[..., :2] + gt_bboxes[..., 2:]) / 2
        distances = torch.cdist(gt_centres, anc_points.expand(self.bs, -1, -1))  # (B, M, A)
        positive = atss_positive_mask(overlaps, distances, anc_points, gt_bboxes, level_sizes, self.topk)
        mask_pos = (positive & mask_gt.bool()).to(torch.int8)
        claimed = torch.where(mask_pos.bool(), overlaps, -1.0)  # max IoU among the GTs an anchor is positive for
        target_gt_idx, fg_mask, _ = self.select_highest_overlaps(mask_pos, claimed, self.n_max_boxes, claimed)
        target_labels, target_bboxes, target_scores = self.get_targets(gt_labels, gt_bboxes, target_gt_idx, fg_mask)
        fg_mask = fg_mask.bool()
        quality = bbox_iou(pd_bboxes, target_bboxes, xywh=False).squeeze(-1).clamp_(0) * fg_mask
        return target_labels, target_bboxes, target_scores * quality.unsqueeze(-1), fg_mask, target_gt_idx
