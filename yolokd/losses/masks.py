"""Where the objects are: GT-box masks on anchor points and feature grids, and Gaussian weights fitted to points.

Shared by PGD (``yolokd/losses/pgd.py``: anchor centres inside GT boxes, the Gaussian fitted to each GT's top-K
anchors) and FGD (``yolokd/losses/fgd.py``: the per-box ``1/(h w)`` scale mask on a feature grid).
Every function works on GT boxes padded per image, (B, M, 4) with a (B, M) validity mask, and is vectorised over
images and boxes: no Python loop over boxes or cells. None of them needs a gradient; callers run them under
``torch.no_grad()``.
"""

from __future__ import annotations

import torch
from torch import Tensor

INSIDE_EPS = 1e-9  # the margin Ultralytics' TAL assigner uses for "anchor centre inside the box"


def points_in_boxes(points: Tensor, boxes: Tensor, box_mask: Tensor) -> Tensor:
    """Which points lie strictly inside which boxes (x against x1/x2, y against y1/y2).

    Args:
        points: (A, 2) point coordinates (x, y), pixels.
        boxes: (B, M, 4) boxes, xyxy, pixels (padding rows allowed); or (B, M, 5) rotated boxes, xywhr (pixels,
            radians), tested in each box's own frame.
        box_mask: (B, M) bool, True for real boxes; padding rows contain no point.

    Returns:
        (B, M, A) bool.
    """
    if boxes.shape[-1] == 5:
        return _points_in_rotated_boxes(points, boxes, box_mask)
    x, y = points[:, 0], points[:, 1]  # (A,)
    x1, y1, x2, y2 = (boxes[..., i : i + 1] for i in range(4))  # (B, M, 1) each
    margin = torch.minimum(torch.minimum(x - x1, y - y1), torch.minimum(x2 - x, y2 - y))
    return (margin > INSIDE_EPS) & box_mask.unsqueeze(-1)


def _points_in_rotated_boxes(points: Tensor, rboxes: Tensor, box_mask: Tensor) -> Tensor:
    """points_in_boxes for (B, M, 5) xywhr boxes: the point's offset from the centre, turned into the box's frame."""
    offset = points - rboxes[..., None, :2]  # (B, M, A, 2)
    cos, sin = rboxes[..., 4:5].cos(), rboxes[..., 4:5].sin()  # (B, M, 1)
    along_w = offset[..., 0] * cos + offset[..., 1] * sin
    along_h = -offset[..., 0] * sin + offset[..., 1] * cos
    margin = torch.minimum(rboxes[..., 2:3] / 2 - along_w.abs(), rboxes[..., 3:4] / 2 - along_h.abs())
    return (margin > INSIDE_EPS) & box_mask.unsqueeze(-1)


def gaussian_fit_weights(points: Tensor, valid: Tensor, ridge: float = 1e-2, relative_ridge: float = 1e-3) -> Tensor:
    """Fit one 2-D Gaussian per group of points by maximum likelihood and weight each point by its density shape.

    Per group: ``μ = mean(x)``, ``Σ = mean((x-μ)(x-μ)ᵀ)`` (biased, the MLE) over its valid points, then
    ``w = exp(-½ (x-μ)ᵀ (Σ + r I)⁻¹ (x-μ))``. The ridge ``r = ridge + relative_ridge · tr(Σ)/2`` keeps Σ invertible
    when the points are degenerate: a single point (Σ = 0, its weight is exactly 1), points on a line (Σ singular;
    on the line the weight then depends on the spread along it only). Its relative part keeps the 2x2 determinant
    well conditioned in float32 for long diagonal lines; both parts are negligible for non-degenerate groups.

    Args:
        points: (..., K, 2) point coordinates, pixels.
        valid: (..., K) bool, the points that belong to the group (a group may have fewer than K, or none).
        ridge: absolute ridge, pixels² (1e-2 = a 0.1 px standard deviation, far below any grid spacing).
        relative_ridge: ridge as a fraction of the mean variance tr(Σ)/2.

    Returns:
        (..., K) weights in [0, 1]; 0 at invalid points, 1 at a point that sits on its group's mean.
    """
    weight = valid.to(points.dtype).unsqueeze(-1)  # (..., K, 1)
    count = weight.sum(dim=-2, keepdim=True).clamp(min=1.0)  # (..., 1, 1)
    mean = (points * weight).sum(dim=-2, keepdim=True) / count  # (..., 1, 2)
    offset = (points - mean) * weight  # (..., K, 2), zero at invalid points
    var_x = offset[..., 0].pow(2).sum(dim=-1) / count[..., 0, 0]
    var_y = offset[..., 1].pow(2).sum(dim=-1) / count[..., 0, 0]
    cov_xy = (offset[..., 0] * offset[..., 1]).sum(dim=-1) / count[..., 0, 0]
    regulariser = ridge + relative_ridge * (var_x + var_y) / 2
    var_x, var_y = var_x + regulariser, var_y + regulariser
    determinant = var_x * var_y - cov_xy.pow(2)  # >= ridge² > 0
    dx, dy = offset[..., 0], offset[..., 1]
    quadratic = (
        var_y.unsqueeze(-1) * dx.pow(2) - 2 * cov_xy.unsqueeze(-1) * dx * dy + var_x.unsqueeze(-1) * dy.pow(2)
    ) / determinant.unsqueeze(-1)
    return torch.exp(-0.5 * quadratic) * weight.squeeze(-1)


def box_scale_mask(boxes: Tensor, box_mask: Tensor, height: int, width: int, stride: float) -> Tensor:
    """FGD's foreground scale mask on one feature grid: ``1 / (h w)`` on the cells a box covers, max over boxes.

    A box covers the cells its extent overlaps: columns ``floor(x1/s) .. ceil(x2/s) - 1`` and rows likewise,
    clipped to the grid; ``h w`` is the number of covered cells, so an isolated box's mask sums to 1.

    Args:
        boxes: (B, M, 4) boxes, xyxy, pixels.
        box_mask: (B, M) bool, True for real boxes.
        height: H, grid rows.
        width: W, grid columns.
        stride: s, pixels per cell.

    Returns:
        (B, H, W) non-negative mask; 0 on cells no box covers.
    """
    if boxes.shape[1] == 0:
        return boxes.new_zeros(boxes.shape[0], height, width)
    grid = boxes / stride
    first = grid[..., :2].floor().clamp(min=0)  # (B, M, 2) first covered column, row
    limits = torch.tensor([width, height], device=boxes.device, dtype=boxes.dtype)
    end = torch.minimum(grid[..., 2:].ceil(), limits)  # (B, M, 2) one past the last covered column, row
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    in_cols = (cols >= first[..., 0:1]) & (cols < end[..., 0:1])  # (B, M, W)
    in_rows = (rows >= first[..., 1:2]) & (rows < end[..., 1:2])  # (B, M, H)
    cells = in_rows.sum(-1) * in_cols.sum(-1)  # (B, M)
    scale = box_mask.to(boxes.dtype) / cells.clamp(min=1).to(boxes.dtype)  # 0 for padding rows
    covered = in_rows.unsqueeze(-1) & in_cols.unsqueeze(-2)  # (B, M, H, W)
    return (covered.to(boxes.dtype) * scale[..., None, None]).amax(dim=1)


def normalize_per_image(mask: Tensor) -> Tensor:
    """Divide each image's mask by its number of non-zero cells (an all-zero mask stays zero).

    Args:
        mask: (B, H, W) non-negative mask.

    Returns:
        (B, H, W) mask.
    """
    count = (mask != 0).sum(dim=(1, 2), keepdim=True).clamp(min=1)
    return mask / count.to(mask.dtype)


__all__ = [
    "box_scale_mask",
    "gaussian_fit_weights",
    "normalize_per_image",
    "points_in_boxes",
]
