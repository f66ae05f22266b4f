"""PGD: Prediction-Guided Distillation for Dense Object Detection.

Yang et al., ECCV 2022, https://arxiv.org/abs/2203.05469 (code: https://github.com/ChenhongyiYang/PGD).

Prediction-guided weighting (PGW): for every GT box g the teacher's quality at anchor a is
``q = σ(t_a[class_g])^(1-ξ) · IoU(b̂_a, g)^ξ`` if the anchor's centre lies inside g (eq. 1). The K = 30 anchors of
highest quality across all levels are the "key predictive regions"; a 2-D Gaussian fitted to their centres by
maximum likelihood (eq. 2) weights them ``exp(-½ (x-μ)ᵀ Σ⁻¹ (x-μ))`` and every other anchor gets 0 (eq. 3); a cell
claimed by several GTs keeps the largest weight. Two masks, ξ_cls = 0.8 and ξ_reg = 0.6. The student then imitates
the first feature map of each head branch: the cls branch with FGD-style attention weighting on the PGW foreground
(α) and on the background, the cells inside no GT box (β) (eq. 5); the box branch on the PGW foreground only,
weighted by the teacher's per-pixel channel attention (γ) (eq. 6); and both imitate the teacher's attention maps
(δ) (eqs. 8-9). Defaults (anchor-free detectors): α = 0.04, β = α/2, γ = 1.6α, δ = 8e-4, T = 0.8, K = 30, cls level
weights 1.0, 1.25, 1.5... from P3 (the authors' FCOS/AutoAssign configs).

YOLO adaptation:
- Features: the output of stage 0 of the cls and of the box tower of each level (the Detect analogue of the paper's
  first head feature), through a trainable 1x1 aligner when the student's width differs (YOLOv8n cls 80 -> YOLOv8s
  128; box widths are equal). The paper drops the adaptation layer because its pairs have equal widths.
- PGW: anchor points are the grid-cell centres in pixels, boxes the teacher's decoded boxes (DFL expectation, or
  ltrb for reg_max = 1), IoU from Ultralytics' ``bbox_iou``. The inside-box test compares x with x1/x2 and y with
  y1/y2 (the authors' anchor-free code swaps x and y). Only anchors inside the GT can be selected: a GT with fewer
  than K inside anchors uses those it has and fits its Gaussian to them alone (the authors' code fits to the top-K
  of all anchors, then zeroes the outside ones). The covariance gets a small ridge instead of the authors' random
  jitter, so the weights are deterministic: one selected anchor (a GT smaller than a cell) gets weight 1, anchors on
  a line are weighted by their spread along it. A GT that contains no anchor centre (smaller than a P3 cell, between
  centres) gets no foreground weight, like the student's own TAL assignment, which gives it no positive either.
- Normalisation (the authors' code): the cls foreground and background masks are divided, per image and level, by
  their number of non-zero cells, the cls sums by B; level λ multiplies α and β terms only. The box feature term is
  ``mean over foreground cells of the batch [w · mean_c(A^C_t (F_t - F_s)²)]`` with the Gaussian weight w itself, its
  attention term ``Σ |A^C_s - A^C_t| / #cells``; eq. 9's extra 1/C is not in the code and not here.
- OBB (rotated boxes): the quality's IoU is ProbIoU (Ultralytics' ``probiou``, as its rotated assigner uses) between
  the teacher's decoded xywhr boxes and the rotated GT, so the angle counts, and the inside-GT test (candidates and
  the background) is done in each GT's rotated frame.
- Anchors per cell (RetinaNet, k = 9): the features PGD imitates have one vector per cell, so its masks are per
  cell: a cell's quality for a GT is the best of its k anchors' qualities, and the top-K and the Gaussian run over
  cells (the paper's K is "high-scoring pixels"; its detectors have one anchor per location). Teacher and student
  may have different k: the masks come from the teacher's predictions and weight cells of both models' features.
- Terms: ``pgd_cls_fg`` (α), ``pgd_cls_bg`` (β), ``pgd_box`` (γ), ``pgd_att`` (δ, cls and box attention together).
- Centerness (FCOS): not distilled and not part of the quality, as in the reference: the authors' FCOS head
  (``mmdet/models/dense_heads/pgd_heads/fcos_distill.py``, config ``work_configs/pgd_fcos_r101_r50_1x.py``) receives
  the teacher's centerness but builds its PGW masks from ``σ(cls)`` and the IoU alone
  (``pgd_heads/utils/pgw_anchor_free.py``), and the distiller imitates the cls and box tower features only; their
  ATSS head's IoU branch is not distilled either. An FCOS student's centerness learns from its GT loss.
- Scale: the defaults are the paper's. Measured on the synthetic set (demo-trained YOLOv8s teacher at 128 px,
  YOLOv8n from scratch, first epoch), pgd_cls_fg / cls_bg / box / att were 19 / 24 / 0.26 / 0.30 against GT loss
  items box / cls / dfl of 6.4 / 5.1 / 4.2: the cls terms start at about 3x the GT loss (the cls sums run over the
  teacher's 128 channels). The paper reports that a too large α makes training unstable; lower fg_weight and
  bg_weight together if it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from yolokd.losses.base import FEATURE_GRAD_SHARE, DistillLoss, LossParams
from yolokd.losses.common import channel_attention, spatial_attention, stage_aligners
from yolokd.losses.masks import normalize_per_image, points_in_boxes
from yolokd.losses.pgd_masks import prediction_guided_weights, prediction_quality
from yolokd.views import HeadSpec, Targets, View

PARTS = ("box", "cls")


def pgd_cls_loss(
    student_feat: Tensor, teacher_feat: Tensor, cell_weights: Tensor, temperature: float
) -> dict[str, Tensor]:
    """Cls-branch imitation (paper eq. 5) and attention imitation (eq. 8), sum reduction; each map computed once.

    Args:
        student_feat: (B, D, H, W) student feature (aligned to the teacher's width).
        teacher_feat: (B, D, H, W) teacher feature (detached here).
        cell_weights: (..., B, H, W) weight maps (e.g. the normalised foreground and background masks stacked).
        temperature: T of every attention map.

    Returns:
        ``feature``: (...) tensor, ``Σ_{b,d,h,w} W A^S_t A^C_t (F_t - F_s)²`` per leading index of ``cell_weights``;
        ``channel_attention``: 0-d, ``Σ |A^C_s - A^C_t|`` (per-pixel channel attention);
        ``spatial_attention``: 0-d, ``Σ |A^S_s - A^S_t|``.
    """
    teacher_feat = teacher_feat.detach()
    with torch.no_grad():
        teacher_spatial = spatial_attention(teacher_feat, temperature)
        teacher_channel = channel_attention(teacher_feat, temperature)
    error = (teacher_spatial.unsqueeze(1) * teacher_channel * (teacher_feat - student_feat).pow(2)).sum(dim=1)
    return {
        "feature": (error * cell_weights).sum(dim=(-3, -2, -1)),
        "channel_attention": (channel_attention(student_feat, temperature) - teacher_channel).abs().sum(),
        "spatial_attention": (spatial_attention(student_feat, temperature) - teacher_spatial).abs().sum(),
    }


def pgd_box_loss(
    student_feat: Tensor, teacher_feat: Tensor, cell_weights: Tensor, temperature: float
) -> dict[str, Tensor]:
    """Box-branch imitation (paper eq. 6, channel mean as in the authors' code) and its attention term (eq. 9).

    Only cells with a non-zero weight count, so callers may pass just those cells (any H, W layout).

    Args:
        student_feat: (B, D, H, W) student feature (aligned).
        teacher_feat: (B, D, H, W) teacher feature (detached here).
        cell_weights: (B, H, W) PGW box weights (not normalised).
        temperature: T of the per-pixel channel attention.

    Returns:
        ``feature``: 0-d, ``Σ_{b,h,w} w · mean_d(A^C_t (F_t - F_s)²)``;
        ``channel_attention``: 0-d, ``Σ_{w > 0} Σ_d |A^C_s - A^C_t|``.
    """
    teacher_feat = teacher_feat.detach()
    with torch.no_grad():
        teacher_channel = channel_attention(teacher_feat, temperature)
    error = (teacher_channel * (teacher_feat - student_feat).pow(2)).mean(dim=1)
    gap = (channel_attention(student_feat, temperature) - teacher_channel).abs().sum(dim=1)
    return {
        "feature": (error * cell_weights).sum(),
        "channel_attention": (gap * (cell_weights > 0).to(gap.dtype)).sum(),
    }


def gather_cells(feat: Tensor, index: Tensor) -> Tensor:
    """(B, D, H, W) feature at N cells per image, ``index`` (B, N) into the flattened H·W -> (B, D, N, 1)."""
    index = index.unsqueeze(1).expand(-1, feat.shape[1], -1)
    return feat.flatten(2).gather(2, index).unsqueeze(-1)


@dataclass
class PGDParams(LossParams):
    """PGD parameters (the authors' anchor-free defaults).

    Attributes:
        fg_weight: α, cls foreground imitation (0.04 anchor-free; 0.08 in their anchor-based ATSS/DDOD configs).
        bg_weight: β, cls background imitation (α/2).
        box_weight: γ, box foreground imitation (1.6α).
        attention_weight: δ, attention imitation of both branches.
        temperature: T of every attention map.
        topk: K, anchors per GT kept by PGW.
        cls_xi: ξ of the cls mask.
        box_xi: ξ of the box mask.
        level_weights: λ per level from P3, multiplying the cls α and β terms (one entry per head level).
        aligner_fit: 1x1 aligners at every width, fitted by least squares from the student's stage-0 outputs to the
            teacher's on the first training batch, then trained (:class:`~yolokd.losses.common.FittedAligner`).
            False (default): identity at equal widths, a randomly initialised 1x1 conv where they differ. Off because
            measured on the pretrained evidence benchmark (3 seeds) the fit left PGD at noise (README, Results).
    """

    grad_share: float = FEATURE_GRAD_SHARE  # a feature-level method (yolokd.losses.base)
    fg_weight: float = 0.04
    bg_weight: float = 0.02
    box_weight: float = 0.064
    attention_weight: float = 8e-4
    temperature: float = 0.8
    topk: int = 30
    cls_xi: float = 0.8
    box_xi: float = 0.6
    level_weights: tuple[float, ...] = (1.0, 1.25, 1.5)
    aligner_fit: bool = False

    positive_fields = ("temperature",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.topk < 1:
            raise ValueError(f"topk={self.topk} must be >= 1")
        for key in ("cls_xi", "box_xi"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key}={getattr(self, key)} must be in [0, 1]")
        if not self.level_weights or min(self.level_weights) < 0:
            raise ValueError(f"level_weights={list(self.level_weights)} must hold one weight >= 0 per head level")


def _split_levels(values: Tensor, shapes: list[tuple[int, int]]) -> list[Tensor]:
    """(B, cells) -> L tensors (B, H_l, W_l), levels in View order."""
    chunks = values.split([h * w for h, w in shapes], dim=1)
    return [chunk.reshape(values.shape[0], h, w) for chunk, (h, w) in zip(chunks, shapes, strict=True)]


class PGDLoss(DistillLoss):
    """PGD on the first stage of the cls and box towers: ``pgd_cls_fg``, ``pgd_cls_bg``, ``pgd_box``, ``pgd_att``."""

    name = "pgd"
    Params = PGDParams
    term_suffixes = ("cls_fg", "cls_bg", "box", "att")
    stage_parts = PARTS

    def __init__(self, params: PGDParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        self.aligners = stage_aligners(student_head, teacher_head, PARTS, fitted=params.aligner_fit)

    def check_pair(self, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().check_pair(teacher_head, student_head)
        if len(self.params.level_weights) != teacher_head.num_levels:
            raise ValueError(
                f"loss 'pgd' has level_weights={list(self.params.level_weights)} ({len(self.params.level_weights)} "
                f"levels) but the head has {teacher_head.num_levels} levels (strides {list(teacher_head.strides)}); "
                "give one weight per level"
            )

    @torch.no_grad()
    def weight_masks(self, teacher: View, targets: Targets) -> dict[str, Tensor]:
        """PGW cls and box weights and the background indicator, each (B, cells), from the teacher's predictions."""
        anchor_points = teacher.anchors * teacher.strides
        rotated = teacher.rboxes is not None and targets.gt_rboxes is not None  # OBB: rotated boxes and GT
        gt_boxes = targets.gt_rboxes if rotated else targets.gt_boxes
        cls_weights, box_weights = prediction_guided_weights(
            teacher.cls_logits.float().sigmoid(),
            (teacher.rboxes if rotated else teacher.boxes).float(),
            anchor_points,
            gt_boxes,
            targets.gt_labels,
            targets.gt_mask,
            k=self.params.topk,
            xi=(self.params.cls_xi, self.params.box_xi),
            anchors_per_cell=teacher.anchors_per_cell,
        )
        outside_every_gt = ~points_in_boxes(teacher.cell_points(), gt_boxes, targets.gt_mask).any(dim=1)
        return {"cls": cls_weights, "box": box_weights, "background": outside_every_gt.float()}

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        shapes = [tuple(f.shape[-2:]) for f in teacher.feats]
        masks = {name: _split_levels(mask, shapes) for name, mask in self.weight_masks(teacher, targets).items()}
        student_feats = {  # the teacher's stage outputs are read by a fitted aligner's first call only
            part: self.aligners[part]([f.float() for f in student.stages[part][0]], teacher.stages[part][0])
            for part in PARTS
        }
        # a GT weights at most K anchors: no level has more than K·M non-zero box weights per image
        max_cells = self.params.topk * max(1, targets.gt_boxes.shape[1])
        totals: dict[str, list[Tensor]] = {suffix: [] for suffix in self.term_suffixes}
        for level, level_weight in enumerate(self.params.level_weights):
            cls_terms = self._cls_level_terms(
                student_feats["cls"][level],
                teacher.stages["cls"][0][level].float(),
                masks["cls"][level],
                masks["background"][level],
            )
            box_terms = self._box_level_terms(
                student_feats["box"][level], teacher.stages["box"][0][level].float(), masks["box"][level], max_cells
            )
            totals["cls_fg"].append(level_weight * cls_terms["cls_fg"])
            totals["cls_bg"].append(level_weight * cls_terms["cls_bg"])
            totals["box"].append(box_terms["box"])
            totals["att"].extend((cls_terms["att"], box_terms["att"]))
        params = self.params
        weights = {
            "cls_fg": params.fg_weight,
            "cls_bg": params.bg_weight,
            "box": params.box_weight,
            "att": params.attention_weight,
        }
        return {
            name: weights[suffix] * torch.stack(totals[suffix]).sum()
            for name, suffix in zip(self.term_names, self.term_suffixes, strict=True)
        }

    def _cls_level_terms(
        self, student_feat: Tensor, teacher_feat: Tensor, fg_weights: Tensor, background: Tensor
    ) -> dict[str, Tensor]:
        """Unweighted cls terms of one level: fg and bg imitation / B, attention imitation (eq. 8 as in the code)."""
        batch, _, height, width = teacher_feat.shape
        cell_weights = torch.stack([normalize_per_image(fg_weights), normalize_per_image(background)])
        sums = pgd_cls_loss(student_feat, teacher_feat, cell_weights, self.params.temperature)
        fg_sum, bg_sum = sums["feature"]
        attention = sums["channel_attention"] / (batch * height * width) + sums["spatial_attention"] / batch
        return {"cls_fg": fg_sum / batch, "cls_bg": bg_sum / batch, "att": attention}

    def _box_level_terms(
        self, student_feat: Tensor, teacher_feat: Tensor, box_weights: Tensor, max_cells: int
    ) -> dict[str, Tensor]:
        """Unweighted box terms of one level, both averaged over the batch's PGW foreground cells (eqs. 6, 9).

        Only the (at most ``max_cells`` per image) cells with a box weight are gathered: the result is the same as
        on the whole map, at a fraction of the cost of the per-pixel channel softmax.
        """
        weights = box_weights.flatten(1)  # (B, H*W)
        top_weights, index = weights.topk(min(max_cells, weights.shape[1]), dim=1)
        sums = pgd_box_loss(
            gather_cells(student_feat, index),
            gather_cells(teacher_feat, index),
            top_weights.unsqueeze(-1),
            self.params.temperature,
        )
        count = (weights > 0).sum().clamp(min=1)
        return {"box": sums["feature"] / count, "att": sums["channel_attention"] / count}


# prediction_guided_weights and prediction_quality live in pgd_masks; tests import them from here too
__all__ = [
    "PGDLoss",
    "PGDParams",
    "gather_cells",
    "pgd_box_loss",
    "pgd_cls_loss",
    "prediction_guided_weights",
    "prediction_quality",
]
