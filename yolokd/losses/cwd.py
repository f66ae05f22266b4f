"""CWD: Channel-wise Knowledge Distillation for Dense Prediction.

Shu et al., ICCV 2021, https://arxiv.org/abs/2011.13256 (code: mmrazor ``ChannelWiseDivergence``).

Every channel map is turned into a distribution over its H·W cells by a softmax at temperature τ; the student's
distribution of each channel is pulled to the teacher's with a KL divergence:
``L = w τ² Σ_{b,d} KL(softmax(F_t/τ) || softmax(F_s/τ)) / (B·D)``. The student thereby learns where each channel
is most active, not its absolute values (adding a constant to a channel map changes nothing). mmrazor's detection
configs (FPN of RetinaNet / Faster R-CNN / GFL) use τ = 1 and w = 10.

YOLO adaptation: the Detect inputs (P3-P5), aligned by a 1x1 conv when widths differ; the per-level losses are
summed as mmrazor sums its per-level losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from yolokd.losses.base import FEATURE_GRAD_SHARE, DistillLoss, LossParams
from yolokd.losses.common import ChannelAligner
from yolokd.views import HeadSpec, Targets, View


def cwd_loss(student_feat: Tensor, teacher_feat: Tensor, temperature: float) -> Tensor:
    """Channel-wise distillation, without weight.

    Args:
        student_feat: (B, D, H, W) aligned student feature (logits of each channel's spatial distribution).
        teacher_feat: (B, D, H, W) teacher feature (detached here).
        temperature: softmax temperature τ > 0.

    Returns:
        0-d tensor: ``τ² Σ_{b,d} KL(softmax_hw(F_t/τ) || softmax_hw(F_s/τ)) / (B·D)``.
    """
    batch, channels = student_feat.shape[:2]
    teacher_logits = teacher_feat.detach().flatten(2) / temperature
    student_logits = student_feat.flatten(2) / temperature
    teacher_log_probs = teacher_logits.log_softmax(dim=2)
    kl_per_map = (teacher_log_probs.exp() * (teacher_log_probs - student_logits.log_softmax(dim=2))).sum(dim=2)
    # A KL of ~0 can round to -1e-7; clamp each map at the true lower bound 0 so logged terms never go negative.
    return kl_per_map.clamp(min=0).sum() * temperature**2 / (batch * channels)


@dataclass
class CWDParams(LossParams):
    """CWD parameters (mmrazor's detection defaults).

    Attributes:
        weight: w, multiplies the per-level loss.
        temperature: softmax temperature τ (``tau`` in configs before it was renamed: still read, with a warning).
    """

    grad_share: float = FEATURE_GRAD_SHARE  # a feature-level method (yolokd.losses.base)
    weight: float = 10.0
    temperature: float = 1.0

    positive_fields = ("temperature",)
    renamed_fields = (("tau", "temperature"),)


class CWDLoss(DistillLoss):
    """Channel-wise KL on the neck features: ``cwd_feat``."""

    name = "cwd"
    Params = CWDParams
    term_suffixes = ("feat",)

    def __init__(self, params: CWDParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        self.aligner = ChannelAligner(student_head.feat_channels, teacher_head.feat_channels)

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        aligned = self.aligner([f.float() for f in student.feats])
        temperature = self.params.temperature
        total = torch.stack(
            [cwd_loss(s, t.float(), temperature) for s, t in zip(aligned, teacher.feats, strict=True)]
        ).sum()
        return {self.term_names[0]: self.params.weight * total}


__all__ = ["CWDLoss", "CWDParams", "cwd_loss"]
