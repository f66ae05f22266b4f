"""MGD: Masked Generative Distillation.

Yang et al., ECCV 2022, https://arxiv.org/abs/2205.01529 (code: https://github.com/yzd-v/MGD; mmrazor's
``MGDConnector`` + ``MGDLoss`` reproduce it).

The student's feature, aligned to the teacher's width, has a random fraction λ of its spatial cells zeroed; a small
generator G = Conv3x3 -> ReLU -> Conv3x3 must rebuild the teacher's full feature from what is left:
``L = α Σ (G(M ⊙ F_s) - F_t)² / B`` on every level, λ = 0.65 and α = 2e-5 for detection (the paper's defaults).

YOLO adaptation: the features are the Detect inputs (P3-P5), aligned by a 1x1 conv when widths differ, one
generator per level at the teacher's width; the levels are summed. The paper's sum reduction is kept as is
(``sum / B``, with α = 2e-5), so the term grows with image area and width: at 640 px a YOLOv8s teacher has
1.43 M feature elements per image, i.e. α·Σ/B is about 29x the per-element squared error, on a 64 px synthetic set
100x less. Raise ``weight`` at small image sizes if the term is too small to matter. A new mask is drawn every
call, at validation too, so the logged val term is a one-sample estimate of its expectation. Aligners and
generators are train-only (KD optimiser, never in the student checkpoint).

At student == teacher the term is ``Σ (G(M ⊙ F_t) - F_t)²``: zero only when the generator rebuilds the
teacher's feature from its masked copy; there is no unmasked, generator-free term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from yolokd.losses.base import FEATURE_GRAD_SHARE, DistillLoss, LossParams, tune_bounds
from yolokd.losses.common import ChannelAligner
from yolokd.views import HeadSpec, Targets, View


def random_spatial_mask(feat: Tensor, mask_ratio: float) -> Tensor:
    """Random cell mask ``M``: each cell is dropped (0) with probability ``mask_ratio``, kept (1) otherwise.

    Args:
        feat: (B, D, H, W) feature the mask is for (its shape, device and dtype are used).
        mask_ratio: λ in [0, 1).

    Returns:
        (B, 1, H, W) tensor of 0/1 in ``feat``'s dtype, made on ``feat``'s device.
    """
    batch, _, height, width = feat.shape
    draw = torch.rand(batch, 1, height, width, device=feat.device)
    return (draw >= mask_ratio).to(feat.dtype)


def mgd_loss(generated_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Generation loss, sum reduction.

    Args:
        generated_feat: (B, D, H, W) generator output ``G(M ⊙ F_s)``.
        teacher_feat: (B, D, H, W) teacher feature (detached here).

    Returns:
        0-d tensor: ``Σ (G(M ⊙ F_s) - F_t)²``.
    """
    return (generated_feat - teacher_feat.detach()).pow(2).sum()


class Generator(nn.Sequential):
    """MGD's generation block: Conv3x3(D->D) -> ReLU -> Conv3x3(D->D)."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )


@dataclass
class MGDParams(LossParams):
    """MGD parameters (paper defaults for detection).

    Attributes:
        weight: α, multiplies ``Σ (G(M ⊙ F_s) - F_t)² / B`` (sum reduction, so it depends on image size).
        mask_ratio: λ, fraction of spatial cells of the aligned student feature zeroed before generation.
    """

    grad_share: float = FEATURE_GRAD_SHARE  # a feature-level method (yolokd.losses.base)
    weight: float = 2e-5
    mask_ratio: float = field(default=0.65, metadata=tune_bounds(0.3, 0.9))  # around the paper's 0.65

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={self.mask_ratio} must be in [0, 1)")


class MGDLoss(DistillLoss):
    """Masked generative distillation on the neck features: ``mgd_feat``."""

    name = "mgd"
    Params = MGDParams
    term_suffixes = ("feat",)

    def __init__(self, params: MGDParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        self.aligner = ChannelAligner(student_head.feat_channels, teacher_head.feat_channels)
        self.generators = nn.ModuleList(Generator(c) for c in teacher_head.feat_channels)

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        aligned = self.aligner([f.float() for f in student.feats])
        total = torch.stack(
            [
                mgd_loss(generator(feat * random_spatial_mask(feat, self.params.mask_ratio)), teacher_feat.float())
                for feat, teacher_feat, generator in zip(aligned, teacher.feats, self.generators, strict=True)
            ]
        ).sum()
        return {self.term_names[0]: self.params.weight * total / student.batch_size}


__all__ = ["Generator", "MGDLoss", "MGDParams", "mgd_loss", "random_spatial_mask"]
