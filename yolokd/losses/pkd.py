"""PKD: General Distillation Framework for Object Detectors via Pearson Correlation Coefficient.

Cao et al., NeurIPS 2022, https://arxiv.org/abs/2207.02039 (code: mmrazor ``PKDLoss``).

Each channel of the student and teacher features is standardised over B·H·W (zero mean, unit variance) and the
student imitates the standardised teacher with an MSE: ``L = w · mean((ẑ_s - ẑ_t)²) / 2`` per level, which is
``w (1 - r)`` with r the Pearson correlation of the two channels, averaged over channels. Magnitude differences
between teacher and student features (and any positive per-channel affine change of the student) no longer
matter. mmrazor uses w = 10 for one-stage FPN detectors (RetinaNet, FCOS) and 6 for Faster R-CNN.

YOLO adaptation: the Detect inputs (P3-P5), aligned by a 1x1 conv when widths differ (the papers' FPN pairs have
equal widths); the levels are summed, w = 10 as for the one-stage detectors. The standard deviation is the
population one (mmrazor: the unbiased one, a factor (N-1)/N on the loss for N = B·H·W, negligible except on
tiny maps where the unbiased one is undefined for N = 1); the 1e-6 added to it is mmrazor's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from yolokd.losses.base import FEATURE_GRAD_SHARE, DistillLoss, LossParams
from yolokd.losses.common import ChannelAligner
from yolokd.views import HeadSpec, Targets, View


def standardize_channels(feat: Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise every channel over B·H·W: ``(F - mean) / (std + eps)``, population std.

    Args:
        feat: (B, D, H, W) feature.
        eps: added to the standard deviation (constant channels map to 0).

    Returns:
        (B, D, H, W) standardised feature.
    """
    mean = feat.mean(dim=(0, 2, 3), keepdim=True)
    std = feat.std(dim=(0, 2, 3), keepdim=True, correction=0)
    return (feat - mean) / (std + eps)


def pkd_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Pearson-correlation feature loss, mean form, without weight.

    Args:
        student_feat: (B, D, H, W) aligned student feature.
        teacher_feat: (B, D, H, W) teacher feature (detached here).

    Returns:
        0-d tensor: ``mean((ẑ_s - ẑ_t)²) / 2`` = ``mean_d (1 - r_d)`` up to the eps.
    """
    difference = standardize_channels(student_feat) - standardize_channels(teacher_feat.detach())
    return difference.pow(2).mean() / 2


@dataclass
class PKDParams(LossParams):
    """PKD weight.

    Attributes:
        weight: w, multiplies the per-level loss (mmrazor: 10 one-stage, 6 two-stage).
    """

    grad_share: float = FEATURE_GRAD_SHARE  # a feature-level method (yolokd.losses.base)
    weight: float = 10.0


class PKDLoss(DistillLoss):
    """Pearson-correlation imitation of the neck features: ``pkd_feat``."""

    name = "pkd"
    Params = PKDParams
    term_suffixes = ("feat",)

    def __init__(self, params: PKDParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        self.aligner = ChannelAligner(student_head.feat_channels, teacher_head.feat_channels)

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        aligned = self.aligner([f.float() for f in student.feats])
        total = torch.stack([pkd_loss(s, t.float()) for s, t in zip(aligned, teacher.feats, strict=True)]).sum()
        return {self.term_names[0]: self.params.weight * total}


__all__ = ["PKDLoss", "PKDParams", "pkd_loss", "standardize_channels"]
