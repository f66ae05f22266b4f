"""Mask KD: instance-mask distillation for segment students (YOLACT-style heads: coefficients x prototypes).

No single paper: the per-instance mask-logit distillation that segmentation KD methods share (e.g. "Efficient
Knowledge Distillation for Instance Segmentation", and Ultralytics' own segment KD), on YOLACT's mask assembly
(Bolya et al., ICCV 2019, https://arxiv.org/abs/1904.02689) as Ultralytics' ``Segment`` head uses it.

For every positive anchor a of the student's assignment (``Targets.fg_mask``), the teacher's mask is assembled from
the teacher's own coefficients at that anchor and its own prototypes, ``m_t = c_t[a] @ P_t`` (logits at 1/4 of the
input size), and the student's likewise, ``m_s = c_s[a] @ P_s``. Inside the anchor's assigned GT box (the crop
Ultralytics' mask loss uses) the student's mask follows the teacher's:

* ``kind: kl`` (default): pixel-wise binary KL ``KL(σ(m_t) || σ(m_s))``, the mean over the box. It is BCE against
  the teacher's probabilities minus the teacher's entropy: the same gradient as Ultralytics' mask BCE with soft
  targets, and 0 at student == teacher.
* ``kind: dice``: soft Dice ``1 - 2 Σ p_s p_t / (Σ p_s² + Σ p_t²)`` over the box (0 at student == teacher).

``mask = weight · Σ_pos loss_a / N_pos``. The default weight 7.5 is Ultralytics' mask-loss gain (hyp ``box``), so at
equal per-pixel errors the KD term is the size of the GT mask term.

YOLO adaptation: the teacher is read at the student's positives (the same anchor of the same level: teacher and
student share the pyramid), so its mask for the object the student's anchor is responsible for needs no matching.
The number of prototypes may differ; prototype maps of another size are resized bilinearly to the student's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from yolokd.losses.base import DistillLoss, LossParams
from yolokd.views import Targets, View

KINDS = ("kl", "dice")
ULTRALYTICS_MASK_GAIN = 7.5  # v8SegmentationLoss multiplies its mask BCE by hyp.box (7.5)


def assemble_masks(coefficients: Tensor, prototypes: Tensor, index: Tensor) -> Tensor:
    """Mask logits of chosen anchors, per image.

    Args:
        coefficients: (B, A, K) mask coefficients.
        prototypes: (B, K, H_m, W_m) prototypes.
        index: (B, P) long, anchors to assemble in each image.

    Returns:
        (B, P, H_m, W_m) mask logits ``coefficients[b, index[b, p]] @ prototypes[b]``.
    """
    b, k, h, w = prototypes.shape
    chosen = coefficients.gather(1, index[..., None].expand(-1, -1, coefficients.shape[2]))  # (B, P, K)
    return torch.bmm(chosen, prototypes.reshape(b, k, h * w)).view(b, -1, h, w)


def box_region(boxes: Tensor, height: int, width: int) -> Tensor:
    """(N, 4) xyxy boxes in mask pixels -> (N, H, W) float 0/1, pixel i inside when x1 <= i < x2 (Ultralytics' crop)."""
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype)
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype)
    x1, y1, x2, y2 = boxes[:, :, None].unbind(1)  # each (N, 1)
    inside_x = (cols >= x1) & (cols < x2)  # (N, W)
    inside_y = (rows >= y1) & (rows < y2)  # (N, H)
    return (inside_y[:, :, None] & inside_x[:, None, :]).to(boxes.dtype)


def mask_kd_loss(student_masks: Tensor, teacher_masks: Tensor, region: Tensor, kind: str = "kl") -> Tensor:
    """Per-mask distillation loss inside a region.

    Args:
        student_masks: (N, H, W) student mask logits.
        teacher_masks: (N, H, W) teacher mask logits (detached here).
        region: (N, H, W) 0/1 weights, the pixels that count (the assigned GT box).
        kind: ``kl`` (mean binary KL over the region) or ``dice`` (soft Dice over the region).

    Returns:
        (N,) loss per mask; 0 for an empty region.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    teacher_masks = teacher_masks.detach()
    teacher_probs = teacher_masks.sigmoid()
    if kind == "kl":
        kl = F.binary_cross_entropy_with_logits(student_masks, teacher_probs, reduction="none")
        kl = kl - F.binary_cross_entropy_with_logits(teacher_masks, teacher_probs, reduction="none")
        return (kl * region).sum((1, 2)).clamp(min=0) / region.sum((1, 2)).clamp(min=1)
    student_probs = student_masks.sigmoid()
    overlap = (student_probs * teacher_probs * region).sum((1, 2))
    total = ((student_probs.square() + teacher_probs.square()) * region).sum((1, 2))
    return (1 - 2 * overlap / total.clamp(min=1e-6)) * (region.sum((1, 2)) > 0)


@dataclass
class MaskKDParams(LossParams):
    """Mask KD weight and divergence.

    Attributes:
        weight: weight of the mask term (default: Ultralytics' mask-loss gain).
        kind: ``kl`` (binary KL, BCE-like gradient) or ``dice`` (soft Dice).
    """

    weight: float = ULTRALYTICS_MASK_GAIN
    kind: str = "kl"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {KINDS}")


class MaskKDLoss(DistillLoss):
    """``mask = weight · Σ_pos loss(c_s[a] @ P_s, c_t[a] @ P_t; assigned GT box) / N_pos`` on segment heads."""

    name = "maskkd"
    Params = MaskKDParams
    task = "segment"
    task_outputs = "instance masks"
    term_suffixes = ("mask",)

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        fg_mask = targets.fg_mask
        count = int(fg_mask.sum(1).max())  # one host sync per step (Ultralytics' mask loss syncs on fg_mask too)
        student_protos = student.prototypes.float()
        _, _, height, width = student_protos.shape
        teacher_protos = teacher.prototypes.float()
        if teacher_protos.shape[2:] != student_protos.shape[2:]:
            teacher_protos = F.interpolate(teacher_protos, (height, width), mode="bilinear", align_corners=False)
        # Positives first in each image (stable), padded to the largest count; padding rows are masked out.
        index = fg_mask.int().sort(dim=1, descending=True, stable=True).indices[:, :count]  # (B, P)
        valid = fg_mask.gather(1, index)  # (B, P)
        student_masks = assemble_masks(student.mask_coefficients.float(), student_protos, index)
        teacher_masks = assemble_masks(teacher.mask_coefficients.float(), teacher_protos, index)
        scale = torch.stack([width / targets.image_size[1], height / targets.image_size[0]]).repeat(2)
        boxes = targets.target_boxes.float().gather(1, index[..., None].expand(-1, -1, 4)) * scale  # mask pixels
        region = box_region(boxes.reshape(-1, 4), height, width) * valid.reshape(-1, 1, 1)
        per_mask = mask_kd_loss(
            student_masks.reshape(-1, height, width),
            teacher_masks.reshape(-1, height, width),
            region,
            self.params.kind,
        )
        term = per_mask.sum() / targets.num_positives
        return {self.term_names[0]: self.params.weight * term}


__all__ = ["MaskKDLoss", "MaskKDParams", "assemble_masks", "box_region", "mask_kd_loss"]
