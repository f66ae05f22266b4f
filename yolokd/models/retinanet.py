"""The RetinaNet head (Focal Loss for Dense Object Detection, Lin et al., ICCV 2017, https://arxiv.org/abs/1708.02002)
as an Ultralytics module: ``[[P3, P4, P5], 1, RetinaNetDetect, [nc, stacked_convs]]`` in a model YAML with
``reg_max: 1``.

mmdetection's ``RetinaHead`` (``retinanet_r50_fpn_1x_coco``): a cls and a box tower of ``stacked_convs`` 3x3 conv +
ReLU (no normalisation, conv weights N(0, 0.01), bias 0) shared by every level; a 3x3 classifier giving k*C logits
per cell (bias at the 0.01 prior) and a 3x3 box predictor giving k*4 deltas per cell; k = 9 anchor boxes per cell
(``octave_base_scale`` 4, ``scales_per_octave`` 3, ratios 0.5/1/2; ``yolokd.models.anchors``). No per-level scale.
At inference each anchor is one detection: boxes decoded from the deltas, scores σ(cls), in Ultralytics' (B, 4 + C, A)
layout with A = Σ_l H_l W_l k (a cell's k anchors contiguous), so Ultralytics' NMS, validator and exporter take it
as they take a YOLO's. Trained by :class:`~yolokd.models.retinanet_loss.RetinaNetLoss`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from ultralytics.utils.ops import xyxy2xywh

from yolokd.models.anchors import anchor_boxes, anchor_shapes, decode_deltas, grid_anchors
from yolokd.models.dense_head import SharedTowerDetect
from yolokd.models.retinanet_loss import RetinaNetLoss


class RetinaNetDetect(SharedTowerDetect):
    """RetinaNet head: shared conv + ReLU towers, k anchors per cell, sigmoid classifier, delta box regression.

    Args:
        nc: C, number of classes.
        stacked_convs: stages per tower (RetinaNet: 4).
        octave_base_scale: side of the smallest anchor, in strides (RetinaNet: 4).
        scales_per_octave: anchor sizes per cell, ``2^(i / scales_per_octave)`` apart (RetinaNet: 3).
        ratios: anchor aspect ratios h / w (RetinaNet: 0.5, 1, 2).
        tower_norm: GroupNorm in the towers (GFL's and FCOS's stage); False (the default) is the reference
            config's towers without normalisation. ``[nc, 4, 4.0, 3, [0.5, 1.0, 2.0], True]`` in a YAML turns it on:
            on the synthetic set a RetinaNet-n learns its classes much faster with it
            (``benchmarks/dense_families/retinanet_probes.md``).
        reg_max: must be 1 (the YAML's ``reg_max: 1``): four deltas per anchor, no distribution.
        ch: widths of the input levels (all equal).

    Attributes:
        anchor_shapes: (w, h) of a cell's k anchors, in strides.
        anchor_wh: (k, 2) the same as a non-persistent buffer (follows the model's device and dtype).
    """

    family = "RetinaNet"

    def __init__(
        self,
        nc: int = 80,
        stacked_convs: int = 4,
        octave_base_scale: float = 4.0,
        scales_per_octave: int = 3,
        ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        tower_norm: bool = False,
        reg_max: int = 1,
        ch: tuple[int, ...] = (),
    ) -> None:
        if reg_max != 1:
            raise ValueError(
                f"RetinaNetDetect regresses four deltas per anchor: set 'reg_max: 1' in the model YAML, not {reg_max}"
            )
        shapes = anchor_shapes(float(octave_base_scale), int(scales_per_octave), tuple(float(r) for r in ratios))
        super().__init__(
            nc,
            stacked_convs,
            reg_max,
            ch,
            anchors_per_cell=len(shapes),
            tower_norm=bool(tower_norm),
            level_scales=False,
        )
        self.anchor_shapes = shapes
        self.register_buffer("anchor_wh", torch.tensor(shapes), persistent=False)

    def _get_decode_boxes(self, x: dict[str, Tensor]) -> Tensor:
        """(B, 4, A) xywh pixels decoded from the deltas ``x["boxes"]`` (B, 4, A) and the anchor boxes."""
        shape = x["feats"][0].shape
        if self.dynamic or self.shape != shape:  # anchor boxes are constants of the input size, as Detect's anchors
            centres, strides = grid_anchors(x["feats"], self.stride, self.anchors_per_cell)
            self.anchors = anchor_boxes(centres, self.anchor_wh.to(centres)) * strides  # (A, 4) xyxy pixels
            self.shape = shape
        boxes = decode_deltas(x["boxes"].transpose(1, 2), self.anchors)  # (B, A, 4) xyxy pixels
        return xyxy2xywh(boxes).transpose(1, 2)

    def build_criterion(self, model: nn.Module) -> RetinaNetLoss:
        """RetinaNet's loss (focal + L1 on deltas, IoU-threshold assignment)."""
        return RetinaNetLoss(model)
