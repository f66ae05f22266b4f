"""Angle KD: rotation distillation for OBB students (Ultralytics' ``OBB`` head: ltrb distances + one angle per anchor).

No single paper: the rotated-detection KD methods distil the angle as part of the box (e.g. ProbIoU/KLD-based
localisation KD); yolokd keeps the box terms of the existing methods (ProbIoU in ``bckd``) and adds this explicit
angle term, the rotated analogue of LD's per-side distillation, with Ultralytics' OBB angle-loss form
(``sin²`` of the wrapped angle difference).

On the student's positive anchors (``Targets.fg_mask``), ``angle = weight · Σ_pos w_a · sin²(θ_s,a - θ_t,a) / N_pos``
with ``w_a = sg(σ(max_c t_ac))`` the teacher's confidence at the anchor. ``sin²`` has period π, the period of a
rotated box's angle (a box turned by π is the same box), is 0 and flat at θ_s = θ_t and never needs wrapping.

YOLO adaptation: a box is the anchor's ltrb distances in the frame of its angle, so the teacher's angle fixes the
frame its distances (distilled by ``ld``/``crosskd`` as for detect) live in; matching the angle mod π (not mod π/2,
as Ultralytics' GT angle loss does for the w/h swap of a GT box) keeps the student in the teacher's
parameterisation. The default weight 1.0 is Ultralytics' angle gain (hyp ``angle``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from yolokd.losses.base import DistillLoss, LossParams
from yolokd.views import Targets, View


def angle_kd_loss(student_angles: Tensor, teacher_angles: Tensor) -> Tensor:
    """Per-anchor angle distillation.

    Args:
        student_angles: (N,) student rotation, radians.
        teacher_angles: (N,) teacher rotation, radians (detached here).

    Returns:
        (N,) ``sin²(θ_s - θ_t)``, in [0, 1], period π.
    """
    return (student_angles - teacher_angles.detach()).sin().square()


@dataclass
class AngleKDParams(LossParams):
    """Angle KD weight.

    Attributes:
        weight: weight of the angle term (default: Ultralytics' angle-loss gain).
    """

    weight: float = 1.0


class AngleKDLoss(DistillLoss):
    """``angle = weight · Σ_pos sg(σ(max_c t)) · sin²(θ_s - θ_t) / N_pos`` on OBB heads."""

    name = "anglekd"
    Params = AngleKDParams
    task = "obb"
    task_outputs = "box angles"
    term_suffixes = ("angle",)

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        # Every anchor is computed and negatives are zeroed (a boolean gather would sync with the host each step).
        confidence = teacher.cls_logits.detach().float().amax(dim=-1).sigmoid() * targets.fg_mask  # (B, A)
        per_anchor = angle_kd_loss(student.angles.float().squeeze(-1), teacher.angles.float().squeeze(-1))
        term = (confidence * per_anchor).sum() / targets.num_positives
        return {self.term_names[0]: self.params.weight * term}


__all__ = ["AngleKDLoss", "AngleKDParams", "angle_kd_loss"]
