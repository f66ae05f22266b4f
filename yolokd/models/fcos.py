"""The FCOS head (FCOS: Fully Convolutional One-Stage Object Detection, Tian et al., ICCV 2019,
https://arxiv.org/abs/1904.01355) as an Ultralytics module: ``[[P3, P4, P5], 1, FCOSDetect, [nc, stacked_convs]]``
in a model YAML with ``reg_max: 1``.

mmdetection's ``FCOSHead`` with its "tricks" (``norm_on_bbox``, ``centerness_on_reg``): a cls and a box tower of
``stacked_convs`` 3x3 conv + GroupNorm + ReLU shared by every level; the box predictor gives ltrb distances in grid
units (stride-normalised) through a learnable per-level ``Scale`` and a ReLU; a centerness predictor on the box tower.
At inference a box's class scores are ``σ(cls) * σ(centerness)`` (mmdetection's NMS score factor), so Ultralytics'
NMS ranks by both. Trained by :class:`~yolokd.models.fcos_loss.FCOSLoss`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yolokd.models.blocks import predictor
from yolokd.models.dense_head import SharedTowerDetect
from yolokd.models.fcos_loss import FCOSLoss


class FCOSDetect(SharedTowerDetect):
    """FCOS head: shared GN towers, sigmoid classifier, ReLU'd ltrb distances, centerness on the box tower.

    Args:
        nc: C, number of classes.
        stacked_convs: stages per tower (FCOS: 4).
        reg_max: must be 1 (the YAML's ``reg_max: 1``): FCOS regresses distances directly.
        ch: widths of the input levels (all equal).
    """

    family = "FCOS"

    def __init__(self, nc: int = 80, stacked_convs: int = 4, reg_max: int = 1, ch: tuple[int, ...] = ()) -> None:
        if reg_max != 1:
            raise ValueError(f"FCOSDetect regresses ltrb directly: set 'reg_max: 1' in the model YAML, not {reg_max}")
        super().__init__(nc, stacked_convs, reg_max, ch)
        self.centerness_pred = predictor(self.box_pred.in_channels, 1)

    def box_output(self, level: int, box_feat: Tensor) -> Tensor:
        """(B, D, H, W) -> (B, 4, H, W) ltrb distances in grid units, >= 0 (mmdetection's ``norm_on_bbox``)."""
        return super().box_output(level, box_feat).relu()

    def extra_outputs(self, cls_feat: Tensor, box_feat: Tensor) -> dict[str, Tensor]:
        """Centerness logits (B, 1, H, W) from the box tower (``centerness_on_reg``)."""
        return {"centerness": self.centerness_pred(box_feat)}

    def _inference(self, x: dict[str, Tensor]) -> Tensor:
        """(B, 4 + C, A): decoded xywh pixels, class scores ``σ(cls) * σ(centerness)``."""
        return torch.cat((self._get_decode_boxes(x), x["scores"].sigmoid() * x["centerness"].sigmoid()), 1)

    def build_criterion(self, model: nn.Module) -> FCOSLoss:
        """FCOS's loss (focal, GIoU weighted by centerness, centerness BCE; centre sampling, scale ranges)."""
        return FCOSLoss(model)
