"""DFD: Distilling the Feature Disparity Differently for Detectors.

Liu et al., ICML 2024 (PMLR vol. 235). The code link the paper gives (https://github.com/luckin99/DFD) holds only a
README, so the paper is the reference.

On every neck level, the spatial attention ``A(F) = H W softmax_hw(mean_c |F|)`` of student and teacher gives a
disparity map ``D = |A(F_t) - A(F_s)|`` (L1, the paper's best, Table 11). Cells with ``D >= mean(D)`` of their
image (the mean beats the median, Table 12; recomputed every step, without gradient) are high-disparity (HD):
the student gets the lenient constraint ``L_HD = Σ_HD (F_t - f_trans(F_s))²`` through a trainable transformation
``f_trans`` = Conv1x1(D->2D) -> ReLU -> Conv3x3(2D->2D) -> ReLU -> Conv1x1(2D->D) ("Conv1-3-1(2C)", Table 5).
The other cells, low-disparity (LD), get the strict ``L_LD = Σ_LD (F_t - F_s)²`` (MSE, Table 9).
``L = α L_HD + β L_LD`` with α > β (Fig. 5); the paper uses α = 2.8e-5, β = 1e-5 with sum reduction. yolokd logs
the two as ``dfd_high_disparity`` and ``dfd_low_disparity`` (weights ``high_disparity_weight`` = α,
``low_disparity_weight`` = β), spelled out so that neither reads as the LD method (``ld``); configs written with the
former names ``hd_weight``/``ld_weight`` are still read, with a warning.

YOLO adaptation: student features first go through a 1x1 aligner to the teacher's width (identity when widths
match; the paper's FPN pairs have equal widths); the disparity, both terms and ``f_trans`` use the aligned
features. The paper's sums grow with image area and width (at 640 px a YOLOv8s neck has 1.43 M elements per
image, a RetinaNet FPN at 1333x800 about 5.7 M), so both terms are summed over all levels, as in the paper, and
divided by the pyramid's total element count ``Σ_l B·D_l·H_l·W_l``: a pyramid-wide per-element mean. Every element
of every level counts the same, as in the paper's sums (a P5 cell weighs no more than a P3 cell), and the value
does not depend on the image size or the batch. The HD and LD cells keep the paper's relative weight (an HD cell
counts α/β = 2.8 times an LD cell), and with α = β and ``f_trans`` the identity the loss is the squared error
averaged over the whole pyramid. Defaults α = 2.8, β = 1.0 are the paper's ratio on this per-element scale (for a
YOLOv8s neck at 640 px, 1.43 M elements per image, the paper's 2.8e-5 · Σ is 40 x the per-element mean). The
overall scale is set by yolokd's KD balance in the default weight mode, which measures each method's gradient share
at the start of a run; in ``paper`` mode the fixed α, β apply as written.

``f_trans`` and the aligners are train-only: the KD optimiser trains them; they never enter the student checkpoint.

At student == teacher the disparity is 0 everywhere, every cell ties with the mean and counts as high-disparity
(eq. 4: ``D >= P``): ``L_LD`` is 0 and ``L_HD = Σ (F_t - f_trans(F_t))²``, which is 0 only once ``f_trans``
has learnt the identity (the lenient term constrains the student through ``f_trans``, never directly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from yolokd.losses.base import FEATURE_GRAD_SHARE, DistillLoss, LossParams
from yolokd.losses.common import ChannelAligner, FittedAligner, spatial_attention
from yolokd.views import HeadSpec, Targets, View


def disparity_map(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Spatial-attention disparity ``D = |A(F_t) - A(F_s)|`` (paper eq. 3).

    Args:
        student_feat: (B, D, H, W) aligned student feature.
        teacher_feat: (B, D, H, W) teacher feature (detached here).

    Returns:
        (B, H, W) non-negative disparity per cell.
    """
    return (spatial_attention(teacher_feat.detach()) - spatial_attention(student_feat)).abs()


@torch.no_grad()
def disparity_mask(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """High-disparity cells: ``D >= mean(D)`` of each image (paper eq. 4), computed without gradient.

    Args:
        student_feat: (B, D, H, W) aligned student feature.
        teacher_feat: (B, D, H, W) teacher feature.

    Returns:
        (B, H, W) bool, True = high disparity (lenient term), False = low disparity (strict term).
    """
    disparity = disparity_map(student_feat.detach(), teacher_feat)
    threshold = disparity.mean(dim=(1, 2), keepdim=True)
    return disparity >= threshold


def region_loss(student_feat: Tensor, teacher_feat: Tensor, region: Tensor) -> Tensor:
    """Squared error summed over the cells of one region (paper eqs. 5-6), sum reduction.

    ``L_HD = region_loss(f_trans(F_s), F_t, mask)``, ``L_LD = region_loss(F_s, F_t, ~mask)``.

    Args:
        student_feat: (B, D, H, W) student feature (aligned, or transformed for the HD term).
        teacher_feat: (B, D, H, W) teacher feature (detached here).
        region: (B, H, W) bool, the cells that count.

    Returns:
        0-d tensor: ``Σ_{b,h,w in region} Σ_d (F_t - F_s)²``.
    """
    squared_error = (teacher_feat.detach() - student_feat).pow(2)
    return (squared_error * region.unsqueeze(1).to(squared_error.dtype)).sum()


class Conv131(nn.Sequential):
    """DFD's transformation module ``f_trans``: Conv1x1(D->eD) -> ReLU -> Conv3x3(eD->eD) -> ReLU -> Conv1x1(eD->D).

    Args:
        channels: D, the teacher's width at this level.
        expansion: e, hidden width as a multiple of D (the paper's best is 2, Table 5).
    """

    def __init__(self, channels: int, expansion: float = 2.0) -> None:
        hidden = max(1, round(channels * expansion))
        super().__init__(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )


@dataclass
class DFDParams(LossParams):
    """DFD weights (paper ratio α/β = 2.8 on a per-element scale, see the module docstring).

    Attributes:
        high_disparity_weight: α, weight of the lenient high-disparity term (through ``f_trans``).
        low_disparity_weight: β, weight of the strict low-disparity term. The paper finds α > β best (Fig. 5); any
            non-negative pair is accepted so the ratio can be studied.
        trans_expansion: hidden width of ``f_trans`` as a multiple of the teacher width (paper Table 5: 0.5, 1
            and 2 give 39.8, 40.1 and 40.2 mAP; at YOLOv8s widths 0.5/1/2 mean 1.1/3.8/13.8 M parameters).
        aligner_fit: 1x1 aligners at every width, fitted by least squares from the student's neck features to the
            teacher's on the first training batch, then trained (:class:`~yolokd.losses.common.FittedAligner`).
            False (default): identity at equal widths, a randomly initialised 1x1 conv where they differ. Off because
            measured on the pretrained evidence benchmark (3 seeds) the fit left DFD at noise (README, Results).
    """

    grad_share: float = FEATURE_GRAD_SHARE  # a feature-level method (yolokd.losses.base)
    high_disparity_weight: float = 2.8
    low_disparity_weight: float = 1.0
    trans_expansion: float = 2.0
    aligner_fit: bool = False

    positive_fields = ("trans_expansion",)
    renamed_fields = (("hd_weight", "high_disparity_weight"), ("ld_weight", "low_disparity_weight"))


class DFDLoss(DistillLoss):
    """DFD on the neck features of every level: ``dfd_high_disparity`` (α, lenient) and ``dfd_low_disparity`` (β,
    strict), each summed over the pyramid and divided by its element count ``Σ_l B·D_l·H_l·W_l``."""

    name = "dfd"
    Params = DFDParams
    term_suffixes = ("high_disparity", "low_disparity")

    def __init__(self, params: DFDParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        aligner = FittedAligner if params.aligner_fit else ChannelAligner
        self.aligner = aligner(student_head.feat_channels, teacher_head.feat_channels)
        self.transforms = nn.ModuleList(Conv131(c, params.trans_expansion) for c in teacher_head.feat_channels)

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        aligned = self.aligner([f.float() for f in student.feats], teacher.feats)  # teacher's: read by a fit only
        high_sums, low_sums = [], []
        for student_feat, teacher_feat, transform in zip(aligned, teacher.feats, self.transforms, strict=True):
            teacher_feat = teacher_feat.float()
            high = disparity_mask(student_feat, teacher_feat)
            high_sums.append(region_loss(transform(student_feat), teacher_feat, high))
            low_sums.append(region_loss(student_feat, teacher_feat, ~high))
        elements = sum(f.numel() for f in teacher.feats)  # Σ_l B·D_l·H_l·W_l: one per-element mean over the pyramid
        high_name, low_name = self.term_names
        return {
            high_name: self.params.high_disparity_weight * torch.stack(high_sums).sum() / elements,
            low_name: self.params.low_disparity_weight * torch.stack(low_sums).sum() / elements,
        }


__all__ = ["Conv131", "DFDLoss", "DFDParams", "disparity_map", "disparity_mask", "region_loss"]
