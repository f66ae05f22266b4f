"""BCKD: Bridging Cross-task Protocol Inconsistency for Distillation in Dense Object Detection.

Yang et al., ICCV 2023, https://arxiv.org/abs/2308.14286 (code: https://github.com/TinyTigerPan/BCKD).

Classification: every class logit map is a binary-classification map; the student's sigmoid score at every
anchor and class is pulled towards the teacher's with a BCE whose weight is the score gap
``|σ(t) - σ(s)|`` (QFL-style: the factor is not detached, so its gradient flows). Localisation: student and
teacher boxes decoded from their own heads, ``1 - GIoU`` at every anchor, weighted by the largest per-class
score gap. ``L = α1 L_cls + α2 L_loc`` with α1 = 1, α2 = 4 (paper Tables 4-5).

YOLO adaptation: terms are summed over every anchor of every level and divided by the student's number of
foreground anchors N_pos (the paper's normalisation), then the trainer multiplies by the batch size the way
Ultralytics scales its own loss. The reference code's "skip a level that has no positive" gating is an
artefact of its per-level loop and is not reproduced. The paper's eq. 9 says IoU; its code uses GIoU, which
we follow. Teacher and student may have different ``reg_max`` (e.g. YOLO26 -> YOLOv8): each decodes its own.

Anchors per cell: with the same anchor layout on both sides (YOLO -> YOLO, RetinaNet -> RetinaNet) the terms run
anchor by anchor, as the paper's ``b_i = Decoder(A_i, o_i)``; when the layouts differ (YOLOv8s -> RetinaNet, RetinaNet
-> YOLOv8n) they run cell by cell on each model's most confident anchor of the cell (``yolokd.losses.common``): the
student's other anchors of that cell get no KD gradient, so the GT loss alone keeps them negative where their anchor
box does not fit the object. N_pos stays the student's positive anchors.

Centerness (FCOS): not distilled, as in the reference: the paper defines the cls and loc terms only, for every
detector it reports (FCOS included, Table 2), and never mentions centerness; the released code (``configs/bckd/``) has
GFL settings only. An FCOS student's centerness learns from its GT loss.

OBB (rotated boxes): GIoU has no rotated form; ``bckd_loc`` is ``1 - ProbIoU(b_s, b_t)`` on the decoded xywhr
boxes (Ultralytics' ``probiou``, the IoU its OBB loss and assigner use; Llerena et al., arXiv:2106.06072), which
compares the boxes as 2-D Gaussians and so includes the angle (modulo pi; a square's angle is free, as it is for
the box itself). It is ~3e-4, not 0, at identical boxes (ProbIoU's eps). As in Ultralytics' ``RotatedBboxLoss``,
each side's variance ``w²/12`` gets a floor of 0.01 grid units² (``0.01 · stride²`` in pixels): a box with a zero
side (OBB26 regresses ltrb directly and views clamp negative distances at 0) would otherwise have an infinite
ProbIoU gradient. The cls term is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss
from ultralytics.utils.loss import RotatedBboxLoss
from ultralytics.utils.metrics import probiou

from yolokd.losses.base import DistillLoss, LossParams
from yolokd.losses.common import match_predictions
from yolokd.views import HeadSpec, Targets, View, same_anchor_layout


def bckd_cls_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Binary classification distillation, summed.

    Args:
        student_logits: (N, C) class logits of the student.
        teacher_logits: (N, C) class logits of the teacher (detached here).

    Returns:
        0-d tensor: ``Σ BCE(s, σ(t)) * |σ(t) - σ(s)|``.
    """
    teacher_scores = teacher_logits.detach().sigmoid()
    bce = F.binary_cross_entropy_with_logits(student_logits, teacher_scores, reduction="none")
    return (bce * (teacher_scores - student_logits.sigmoid()).abs()).sum()


def score_disagreement(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Per-anchor localisation weight ``max_c |σ(t_ac) - σ(s_ac)|`` (both detached: a weight, not a target)."""
    return (teacher_logits.detach().sigmoid() - student_logits.detach().sigmoid()).abs().amax(dim=1)


def bckd_loc_loss(
    student_boxes: Tensor, teacher_boxes: Tensor, student_logits: Tensor, teacher_logits: Tensor
) -> Tensor:
    """IoU-based localisation distillation, summed.

    Args:
        student_boxes: (N, 4) student boxes, xyxy.
        teacher_boxes: (N, 4) teacher boxes, xyxy, same units (detached here).
        student_logits: (N, C) student class logits (only used, detached, for the weight).
        teacher_logits: (N, C) teacher class logits (detached).

    Returns:
        0-d tensor: ``Σ_a max_c |σ(t_ac) - σ(s_ac)| * (1 - GIoU(b_s, b_t))``.
    """
    weight = score_disagreement(student_logits, teacher_logits)
    giou_loss = generalized_box_iou_loss(student_boxes, teacher_boxes.detach(), reduction="none")
    return (weight * giou_loss).sum()


def bckd_rotated_loc_loss(
    student_rboxes: Tensor,
    teacher_rboxes: Tensor,
    student_logits: Tensor,
    teacher_logits: Tensor,
    variance_floor: Tensor | float = 0.0,
) -> Tensor:
    """ProbIoU-based localisation distillation for rotated boxes (OBB), summed.

    Args:
        student_rboxes: (N, 5) student boxes, xywhr (pixels, radians).
        teacher_rboxes: (N, 5) teacher boxes, xywhr, same units (detached here).
        student_logits: (N, C) student class logits (only used, detached, for the weight).
        teacher_logits: (N, C) teacher class logits (detached).
        variance_floor: scalar or (N, 1), added to each side's Gaussian variance ``w²/12``, units² of the boxes
            (Ultralytics' ``probiou(floor=...)``); > 0 keeps the gradient finite for a box with a zero side.

    Returns:
        0-d tensor: ``Σ_a max_c |σ(t_ac) - σ(s_ac)| * (1 - ProbIoU(b_s, b_t))``.
    """
    weight = score_disagreement(student_logits, teacher_logits)
    iou = probiou(teacher_rboxes.detach(), student_rboxes, floor=variance_floor).squeeze(-1)
    return (weight * (1 - iou)).sum()


@dataclass
class BCKDParams(LossParams):
    """BCKD weights (paper defaults).

    Attributes:
        cls_weight: α1, weight of the binary classification distillation term.
        loc_weight: α2, weight of the IoU-based localisation distillation term.
    """

    cls_weight: float = 1.0
    loc_weight: float = 4.0


class BCKDLoss(DistillLoss):
    """BCKD on a YOLO head: ``bckd_cls`` and ``bckd_loc``, each ``weight * Σ / N_pos``."""

    name = "bckd"
    Params = BCKDParams
    term_suffixes = ("cls", "loc")

    def __init__(self, params: BCKDParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        self.per_anchor = same_anchor_layout(teacher_head, student_head)  # else cell by cell (module docstring)

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        matched = match_predictions(student, teacher, self.per_anchor)
        num_classes = student.cls_logits.shape[-1]
        student_logits = matched.student_logits.float().reshape(-1, num_classes)
        teacher_logits = matched.teacher_logits.float().reshape(-1, num_classes)
        num_pos = targets.num_positives
        cls_term = bckd_cls_loss(student_logits, teacher_logits) / num_pos
        if student.rboxes is not None:  # OBB: ProbIoU on rotated boxes (module docstring)
            floor = RotatedBboxLoss.floor * student.strides.square()  # (A, 1) pixels²: 0.01 grid units²
            loc_sum = bckd_rotated_loc_loss(
                student.rboxes.float().reshape(-1, 5),
                teacher.rboxes.float().reshape(-1, 5),
                student_logits,
                teacher_logits,
                floor.expand(student.batch_size, -1, -1).reshape(-1, 1),
            )
        else:
            loc_sum = bckd_loc_loss(
                matched.student_boxes.float().reshape(-1, 4),
                matched.teacher_boxes.float().reshape(-1, 4),
                student_logits,
                teacher_logits,
            )
        loc_term = loc_sum / num_pos
        cls_name, loc_name = self.term_names
        return {cls_name: self.params.cls_weight * cls_term, loc_name: self.params.loc_weight * loc_term}


__all__ = ["BCKDLoss", "BCKDParams", "bckd_cls_loss", "bckd_loc_loss", "bckd_rotated_loc_loss"]
