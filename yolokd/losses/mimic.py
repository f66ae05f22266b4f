"""Mimic / FitNet hint learning on the neck features.

Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, https://arxiv.org/abs/1412.6550; used as the
plain feature-imitation baseline in the detection KD papers (e.g. Li et al., "Mimicking Very Efficient Network
for Object Detection", CVPR 2017).

The student's neck feature of every level goes through a 1x1 aligner to the teacher's width and is pulled to the
teacher's feature with an MSE. YOLO adaptation: the features are the Detect inputs (P3-P5); each level's MSE is
the mean over B·D·H·W and levels are summed, so the term does not grow with image size or width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from yolokd.losses.base import FEATURE_GRAD_SHARE, DistillLoss, LossParams
from yolokd.losses.common import ChannelAligner
from yolokd.views import HeadSpec, Targets, View


def mimic_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Mean squared error between aligned student (B, D, H, W) and teacher (B, D, H, W, detached) features."""
    return F.mse_loss(student_feat, teacher_feat.detach())


@dataclass
class MimicParams(LossParams):
    """Mimic weight.

    Attributes:
        weight: weight of the summed per-level MSE.
    """

    grad_share: float = FEATURE_GRAD_SHARE  # a feature-level method (yolokd.losses.base)
    weight: float = 1.0


class MimicLoss(DistillLoss):
    """Aligned neck-feature MSE: ``mimic_feat``."""

    name = "mimic"
    Params = MimicParams
    term_suffixes = ("feat",)

    def __init__(self, params: MimicParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        self.aligner = ChannelAligner(student_head.feat_channels, teacher_head.feat_channels)

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        aligned = self.aligner([f.float() for f in student.feats])
        total = sum(mimic_loss(s, t.float()) for s, t in zip(aligned, teacher.feats, strict=True))
        return {self.term_names[0]: self.params.weight * total}
