"""PGD's prediction-guided weighting (PGW, paper eqs. 1-3): the foreground masks PGD's feature imitation is weighted by.

Yang et al., ECCV 2022, https://arxiv.org/abs/2203.05469. Per GT box, the teacher's quality of every anchor inside
it, ``σ(t_a[class_g])^(1-ξ) · IoU(b̂_a, g)^ξ``; the top-K anchors by quality, weighted by a Gaussian fitted to their
centres; a cell claimed by several GTs keeps the largest weight. The YOLO adaptation (inside test, ridge instead of
jitter, ProbIoU for OBB, cells for several anchors per cell) is described in :mod:`yolokd.losses.pgd`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from ultralytics.utils.metrics import bbox_iou, probiou

from yolokd.losses.masks import gaussian_fit_weights, points_in_boxes
from yolokd.views import cell_max


def _gt_scores_and_ious(teacher_scores: Tensor, teacher_boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor):
    """(B, M, A) teacher probability of each GT's class and (B, M, A) IoU of each anchor's box with each GT."""
    batch, anchors, _ = teacher_scores.shape
    index = gt_labels.unsqueeze(1).expand(batch, anchors, gt_labels.shape[1])  # (B, A, M)
    class_scores = teacher_scores.gather(2, index).transpose(1, 2)  # (B, M, A)
    if gt_boxes.shape[-1] == 5:  # rotated xywhr: ProbIoU
        shape = (batch, gt_boxes.shape[1], anchors, 5)  # probiou takes (N, 5): pair every GT with every anchor
        pairs = (
            gt_boxes.unsqueeze(2).expand(shape).reshape(-1, 5),
            teacher_boxes.unsqueeze(1).expand(shape).reshape(-1, 5),
        )
        ious = probiou(*pairs).view(shape[:3]).clamp(min=0)
    else:
        ious = bbox_iou(gt_boxes.unsqueeze(2), teacher_boxes.unsqueeze(1), xywh=False).squeeze(-1).clamp(min=0)
    return class_scores, ious


def _combine(class_scores: Tensor, ious: Tensor, xi: float) -> Tensor:
    return class_scores.pow(1 - xi) * ious.pow(xi)


@torch.no_grad()
def prediction_quality(
    teacher_scores: Tensor, teacher_boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, xi: float
) -> Tensor:
    """Teacher quality of every anchor for every GT, ``σ(t_a[class_g])^(1-ξ) · IoU(b̂_a, g)^ξ`` (paper eq. 1).

    The eq. 1 indicator (anchor centre inside the GT) is left to the caller (``points_in_boxes``).

    Args:
        teacher_scores: (B, A, C) teacher class probabilities (sigmoid of the logits).
        teacher_boxes: (B, A, 4) teacher boxes, xyxy, pixels; or (B, A, 5) xywhr (OBB, with ``gt_boxes`` likewise).
        gt_boxes: (B, M, 4) GT boxes, xyxy, pixels (padded); or (B, M, 5) xywhr (ProbIoU then).
        gt_labels: (B, M) long GT classes.
        xi: ξ in [0, 1], the weight of localisation against classification.

    Returns:
        (B, M, A) quality in [0, 1].
    """
    return _combine(*_gt_scores_and_ious(teacher_scores, teacher_boxes, gt_boxes, gt_labels), xi)


@torch.no_grad()
def topk_gaussian_weights(quality: Tensor, candidates: Tensor, anchor_points: Tensor, k: int) -> Tensor:
    """PGW eqs. 2-3: per GT, the top-k candidate anchors by quality, weighted by a Gaussian fitted to their centres.

    "Anchors" are whatever ``quality`` runs over: anchor points, or cells for heads with several anchors per cell.

    Args:
        quality: (B, M, A) teacher quality of each anchor for each GT.
        candidates: (B, M, A) bool, anchors that may be selected (centre inside the GT; False for padding GTs).
        anchor_points: (A, 2) anchor centres (x, y), pixels, levels concatenated.
        k: K, anchors kept per GT (fewer when a GT has fewer candidates).

    Returns:
        (B, A) weights in [0, 1], the max over GTs; non-zero on at most K anchors per GT.
    """
    batch, _, anchors = quality.shape
    ranked = torch.where(candidates, quality, torch.full_like(quality, -1.0))  # non-candidates rank last
    top_index = ranked.topk(min(k, anchors), dim=-1).indices  # (B, M, K)
    selected = candidates.gather(-1, top_index)  # (B, M, K)
    weights = gaussian_fit_weights(anchor_points[top_index], selected)  # (B, M, K)
    out = quality.new_zeros(batch, anchors)
    return out.scatter_reduce_(1, top_index.flatten(1), weights.flatten(1), reduce="amax")


@torch.no_grad()
def prediction_guided_weights(
    teacher_scores: Tensor,
    teacher_boxes: Tensor,
    anchor_points: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    k: int = 30,
    xi: float | tuple[float, ...] = 0.8,
    anchors_per_cell: int = 1,
) -> Tensor:
    """The PGW foreground mask of a batch per cell, before normalisation (paper eqs. 1-3).

    Args:
        teacher_scores: (B, A, C) teacher class probabilities (detached here).
        teacher_boxes: (B, A, 4) teacher boxes, xyxy, pixels (detached here); or (B, A, 5) xywhr (OBB).
        anchor_points: (A, 2) anchor centres (x, y), pixels, levels concatenated as in the View (a cell's k anchors
            in a row, sharing its centre).
        gt_boxes: (B, M, 4) GT boxes, xyxy, pixels (padded); or (B, M, 5) xywhr (OBB: ProbIoU, rotated inside test).
        gt_labels: (B, M) long GT classes.
        gt_mask: (B, M) bool, True for real GT rows.
        k: K, anchors per GT (30 in the paper).
        xi: ξ (0.8 for the cls mask, 0.6 for the box mask in the paper), or a tuple of X values of ξ: one mask
            each, sharing the teacher's class scores, IoUs and the inside-GT test (how PGD builds both masks).
        anchors_per_cell: k; a cell's quality is the largest of its k anchors' (identity for k = 1).

    Returns:
        (B, A / k) weights per cell in [0, 1], 0 outside every GT's top-K set; (X, B, A / k) for a tuple of ξ.
    """
    class_scores, ious = _gt_scores_and_ious(teacher_scores, teacher_boxes, gt_boxes, gt_labels)
    cell_points = anchor_points[::anchors_per_cell]
    candidates = points_in_boxes(cell_points, gt_boxes, gt_mask)
    xis = xi if isinstance(xi, tuple) else (xi,)
    masks = [
        topk_gaussian_weights(cell_max(_combine(class_scores, ious, x), anchors_per_cell), candidates, cell_points, k)
        for x in xis
    ]
    return torch.stack(masks) if isinstance(xi, tuple) else masks[0]


__all__ = ["prediction_guided_weights", "prediction_quality", "topk_gaussian_weights"]
