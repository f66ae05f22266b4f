"""FGD: Focal and Global Knowledge Distillation for Detectors.

Yang et al., CVPR 2022, https://arxiv.org/abs/2111.11837 (code: https://github.com/yzd-v/FGD; mmrazor's
``FGDLoss`` reproduces it).

Focal distillation separates foreground from background with the GT boxes: a scale mask ``S = 1/(h w)`` on the cells
of each box (the larger value where boxes overlap) and ``1/N_bg`` on the cells of no box. The student imitates the
teacher's neck feature weighted by the teacher's spatial attention ``A^S = H W softmax_hw(mean_c |F| / T)`` and
channel attention pooled over space ``A^C = C softmax_c(mean_hw |F| / T)``:
``L_fg = α Σ S_fg A^S_t A^C_t (F_t - F_s)²``, ``L_bg = β Σ S_bg A^S_t A^C_t (F_t - F_s)²``, and imitates the
attention maps themselves, ``L_att = γ (Σ |A^S_t - A^S_s| + Σ |A^C_t - A^C_s|)``. Global distillation passes
student and teacher features through their own GcBlock (context pooling by a 1x1 conv + softmax, then
Conv1x1(C->C/2) -> LayerNorm -> ReLU -> Conv1x1(C/2->C), whose last conv starts at zero) and matches the outputs,
``L_global = λ Σ (R(F_t) - R(F_s))²``. Every sum is divided by B. Defaults are the authors' YOLOX config
(YOLOX-L -> YOLOX-M): T = 0.5, α = 2e-3, β = 1e-3, γ = 1e-3, λ = 1e-5.

YOLO adaptation: the features are the Detect inputs (P3-P5), the student's through a 1x1 aligner to the teacher's
width when they differ (as the authors' code does; YOLOv8n 64/128/256 -> YOLOv8s 128/256/512); every term uses the
aligned feature; levels are summed. The foreground mask is built from the boxes on each grid with the right axes
(the authors' loop indexes the (H, W) mask as [x, y]) and counts exactly the cells a box overlaps (their
``floor .. ceil`` slices include one extra row and column, so ``h w`` is over-counted too); it is built for all
boxes at once (their code loops over images and boxes). The sum reduction is kept: the fg and bg terms are
normalised by their masks (per box area, per background count), but the global term and the spatial part of the
attention term grow with image area (at 640 px a YOLOv8s neck has 1.43 M elements per image); the YOLOX weights were
tuned at 640 px with a teacher neck twice as wide (YOLOX-L 256/512/1024). The GcBlocks and aligners are train-only
(KD optimiser, never exported).

Terms: ``fgd_fg`` (α), ``fgd_bg`` (β), ``fgd_att`` (γ, the paper's attention loss; "mask loss" in the code),
``fgd_global`` (λ). Scale, measured on the synthetic set (demo-trained YOLOv8s teacher at 128 px, YOLOv8n from
scratch, first epoch): fg / bg / att / global were 13 / 2.1 / 0.60 / 0.30 against GT loss items box / cls / dfl of
6.4 / 5.1 / 4.2.

OBB (rotated boxes): the foreground mask is built from the axis-aligned boxes enclosing the rotated GT
(``Targets.gt_boxes``): FGD's masks are per-box rectangles on the grid with a 1/area weight, and the enclosing box is
the rectangle the rotated object touches (its corners add some background to the foreground).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from yolokd.losses.base import FEATURE_GRAD_SHARE, DistillLoss, LossParams
from yolokd.losses.common import ChannelAligner, pooled_channel_attention, spatial_attention
from yolokd.losses.masks import box_scale_mask, normalize_per_image
from yolokd.views import HeadSpec, Targets, View


def fgd_focal_loss(
    student_feat: Tensor, teacher_feat: Tensor, cell_weights: Tensor, temperature: float
) -> dict[str, Tensor]:
    """Focal distillation (the paper's L_focal = L_fea + L_at), sum reduction; each attention map computed once.

    Args:
        student_feat: (B, D, H, W) student feature (aligned to the teacher's width).
        teacher_feat: (B, D, H, W) teacher feature (detached here).
        cell_weights: (..., B, H, W) weight maps (the foreground scale mask and the normalised background mask).
        temperature: T of the spatial and pooled channel attention.

    Returns:
        ``feature``: (...) tensor, ``Σ_{b,d,h,w} W A^S_t A^C_t (F_t - F_s)²`` per leading index of ``cell_weights``;
        ``attention``: 0-d, ``Σ |A^S_t - A^S_s| + Σ |A^C_t - A^C_s|`` ("mask loss" in the authors' code).
    """
    teacher_feat = teacher_feat.detach()
    with torch.no_grad():
        teacher_spatial = spatial_attention(teacher_feat, temperature)  # (B, H, W)
        teacher_channel = pooled_channel_attention(teacher_feat, temperature)  # (B, D)
    attention = teacher_spatial.unsqueeze(1) * teacher_channel[..., None, None]
    error = (attention * (teacher_feat - student_feat).pow(2)).sum(dim=1)  # (B, H, W)
    spatial_gap = spatial_attention(student_feat, temperature) - teacher_spatial
    channel_gap = pooled_channel_attention(student_feat, temperature) - teacher_channel
    return {
        "feature": (error * cell_weights).sum(dim=(-3, -2, -1)),
        "attention": spatial_gap.abs().sum() + channel_gap.abs().sum(),
    }


class GcBlock(nn.Module):
    """FGD's global relation module on one feature: ``F + Conv-LN-ReLU-Conv(Σ_hw softmax(conv(F)) F)``.

    The last conv starts at zero, so at initialisation the block is the identity.

    Args:
        channels: D, the teacher's width at this level.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 2)
        self.context_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.context_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.context_mask.bias)
        nn.init.zeros_(self.channel_add[-1].weight)
        nn.init.zeros_(self.channel_add[-1].bias)

    def forward(self, feat: Tensor) -> Tensor:
        """(B, D, H, W) -> (B, D, H, W)."""
        batch, channels, _, _ = feat.shape
        attention = self.context_mask(feat).flatten(1).softmax(dim=1)  # (B, H*W)
        context = torch.bmm(feat.flatten(2), attention.unsqueeze(-1)).view(batch, channels, 1, 1)
        return feat + self.channel_add(context)


def fgd_global_loss(student_relation: Tensor, teacher_relation: Tensor) -> Tensor:
    """Global relation imitation (the paper's L_global), sum reduction.

    Args:
        student_relation: (B, D, H, W) the student's GcBlock output on its aligned feature.
        teacher_relation: (B, D, H, W) the teacher-side GcBlock output on the (detached) teacher feature.

    Returns:
        0-d tensor: ``Σ (R(F_t) - R(F_s))²``.
    """
    return (teacher_relation - student_relation).pow(2).sum()


@dataclass
class FGDParams(LossParams):
    """FGD parameters (the authors' YOLOX defaults).

    Attributes:
        fg_weight: α, foreground imitation.
        bg_weight: β, background imitation.
        attention_weight: γ, attention imitation.
        global_weight: λ, global relation imitation.
        temperature: T of the attention maps.
    """

    grad_share: float = FEATURE_GRAD_SHARE  # a feature-level method (yolokd.losses.base)
    fg_weight: float = 2e-3
    bg_weight: float = 1e-3
    attention_weight: float = 1e-3
    global_weight: float = 1e-5
    temperature: float = 0.5

    positive_fields = ("temperature",)


class FGDLoss(DistillLoss):
    """FGD on the neck features of every level: ``fgd_fg``, ``fgd_bg``, ``fgd_att``, ``fgd_global``."""

    name = "fgd"
    Params = FGDParams
    term_suffixes = ("fg", "bg", "att", "global")

    def __init__(self, params: FGDParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        self.aligner = ChannelAligner(student_head.feat_channels, teacher_head.feat_channels)
        self.student_relations = nn.ModuleList(GcBlock(c) for c in teacher_head.feat_channels)
        self.teacher_relations = nn.ModuleList(GcBlock(c) for c in teacher_head.feat_channels)
        self.strides = teacher_head.strides

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        temperature = self.params.temperature
        aligned = self.aligner([f.float() for f in student.feats])
        batch = student.batch_size
        totals: dict[str, list[Tensor]] = {suffix: [] for suffix in self.term_suffixes}
        levels = zip(aligned, teacher.feats, self.strides, self.student_relations, self.teacher_relations, strict=True)
        for student_feat, teacher_feat, stride, student_relation, teacher_relation in levels:
            teacher_feat = teacher_feat.detach().float()
            height, width = teacher_feat.shape[-2:]
            with torch.no_grad():
                fg_mask = box_scale_mask(targets.gt_boxes.float(), targets.gt_mask, height, width, stride)
                bg_mask = normalize_per_image((fg_mask == 0).to(fg_mask.dtype))
            focal = fgd_focal_loss(student_feat, teacher_feat, torch.stack([fg_mask, bg_mask]), temperature)
            fg_sum, bg_sum = focal["feature"]
            totals["fg"].append(fg_sum)
            totals["bg"].append(bg_sum)
            totals["att"].append(focal["attention"])
            totals["global"].append(fgd_global_loss(student_relation(student_feat), teacher_relation(teacher_feat)))
        params = self.params
        weights = {
            "fg": params.fg_weight,
            "bg": params.bg_weight,
            "att": params.attention_weight,
            "global": params.global_weight,
        }
        return {
            name: weights[suffix] * torch.stack(totals[suffix]).sum() / batch
            for name, suffix in zip(self.term_names, self.term_suffixes, strict=True)
        }


__all__ = ["FGDLoss", "FGDParams", "GcBlock", "fgd_focal_loss", "fgd_global_loss"]
