"""Anchor boxes and the delta box coder of anchor-based heads (RetinaNet: Lin et al., ICCV 2017,
https://arxiv.org/abs/1708.02002; mmdetection's ``AnchorGenerator`` and ``DeltaXYWHBBoxCoder``).

Anchor shapes: per cell, ``scales_per_octave`` sizes ``octave_base_scale * 2^(i / scales_per_octave)`` strides
times each aspect ratio ``r = h / w`` (``w = s / sqrt(r)``, ``h = s * sqrt(r)``), ratio-major (mmdetection's
``scale_major`` order); RetinaNet: 4 strides, 3 scales, ratios 0.5/1/2 = 9 anchors per cell (32-203 px at stride 8).
Written here because torchvision's ``AnchorGenerator`` rounds its base anchors to whole pixels and takes image lists;
the shapes are three lines of arithmetic.

Anchor centres are Ultralytics' cell centres (``make_anchors``, index + 0.5) with each cell's k anchors in a row: the
layout of ``yolokd.views``. mmdetection puts them at the cell corner (``center_offset=0``); the half-cell shift makes
them the same points the views, PGD and every other anchor-free head of yolokd use.

Deltas: torchvision's ``BoxCoder`` with weights (1, 1, 1, 1), mmdetection's ``DeltaXYWHBBoxCoder`` with RetinaNet's
means 0 and stds 1: ``(dx, dy, dw, dh) = ((x_g - x_a) / w_a, (y_g - y_a) / h_a, log(w_g / w_a), log(h_g / h_a))``.
Decoding clips dw, dh from above at log(1000 / 16) as both do (mmdetection also clips from below, at a box 1.6 % of
its anchor's side; no training target is that small).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from ultralytics.utils.tal import make_anchors

DELTA_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


def anchor_shapes(
    octave_base_scale: float = 4.0, scales_per_octave: int = 3, ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
) -> tuple[tuple[float, float], ...]:
    """(w, h) of a cell's k = ``scales_per_octave * len(ratios)`` anchor boxes, in strides, ratio-major.

    Raises:
        ValueError: a scale or ratio that is not > 0.
    """
    if octave_base_scale <= 0 or scales_per_octave < 1 or not ratios or min(ratios) <= 0:
        raise ValueError(
            f"anchors need octave_base_scale > 0, scales_per_octave >= 1 and ratios > 0; got {octave_base_scale}, "
            f"{scales_per_octave}, {list(ratios)}"
        )
    scales = [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
    return tuple((scale / math.sqrt(ratio), scale * math.sqrt(ratio)) for ratio in ratios for scale in scales)


def grid_anchors(feats: list[Tensor], strides: Tensor, anchors_per_cell: int) -> tuple[Tensor, Tensor]:
    """Anchor centres of every level in the views' layout (each cell's k anchors consecutive).

    Args:
        feats: L tensors (B, D, H_l, W_l), only their sizes are read.
        strides: (L,) pixels per grid unit of each level.
        anchors_per_cell: k.

    Returns:
        centres (A, 2) grid units of their level, strides (A, 1) pixels; A = Σ_l H_l W_l k.
    """
    points, stride_tensor = make_anchors(feats, strides, 0.5)
    return points.repeat_interleave(anchors_per_cell, 0), stride_tensor.repeat_interleave(anchors_per_cell, 0)


def anchor_boxes(centres: Tensor, shapes: Tensor) -> Tensor:
    """(A, 2) anchor centres (each cell's k in a row) + (k, 2) anchor (w, h), same units -> (A, 4) xyxy boxes."""
    half = shapes.repeat(centres.shape[0] // shapes.shape[0], 1) / 2
    return torch.cat((centres - half, centres + half), -1)


def encode_deltas(anchors: Tensor, boxes: Tensor) -> Tensor:
    """(N, 4) anchor boxes + (N, 4) target boxes, xyxy, same units -> (N, 4) deltas (dx, dy, dw, dh)."""
    return DELTA_CODER.encode_single(boxes, anchors)


def decode_deltas(deltas: Tensor, anchors: Tensor) -> Tensor:
    """(..., A, 4) deltas + (A, 4) anchor boxes xyxy -> (..., A, 4) boxes xyxy, in the anchors' units."""
    anchors = anchors.to(deltas.dtype).expand_as(deltas)
    return DELTA_CODER.decode_single(deltas.reshape(-1, 4), anchors.reshape(-1, 4)).view(deltas.shape)
