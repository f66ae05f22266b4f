"""Keypoint KD: keypoint distillation for pose students (Ultralytics' ``Pose`` head: K keypoints per anchor).

No single paper: the teacher's keypoints are soft targets in the OKS form that pose KD methods and Ultralytics' own
keypoint loss use (Ultralytics ``KeypointLoss``; OKS from COCO keypoint evaluation), plus the teacher's visibility.

On the student's positive anchors (``Targets.fg_mask``), with the teacher's and the student's keypoints decoded at the
same anchor (pixels) and the anchor's assigned GT box area ``s``:

* location: ``Σ_k v_t,k (1 - exp(-d_k² / (8 σ_k² s))) / Σ_k v_t,k`` with ``d_k`` the student-teacher distance and
  ``v_t,k = σ(teacher visibility logit)``: a keypoint the teacher sees as occluded or outside the image counts less
  (all keypoints count equally for heads without a visibility channel). ``σ_k`` are Ultralytics' (COCO's OKS sigmas
  for 17 keypoints, 1/K otherwise).
* visibility: binary KL ``KL(σ(v_t) || σ(v_s))`` averaged over the K keypoints (0 at student == teacher; BCE to the
  teacher's probabilities minus its entropy).

``kptkd_loc = loc_weight · Σ_pos location / N_pos``, ``kptkd_vis = vis_weight · Σ_pos visibility / N_pos``. Defaults
12.0 and 1.0 are Ultralytics' pose and keypoint-objectness gains (hyp ``pose``, ``kobj``).

YOLO adaptation: teacher and student share the pyramid, so the teacher's keypoints at the student's positive anchor
are its prediction for the same object; both heads must have the same keypoint shape (checked when built).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from ultralytics.utils.metrics import OKS_SIGMA

from yolokd.losses.base import DistillLoss, LossParams
from yolokd.views import HeadSpec, Targets, View


def keypoint_sigmas(count: int, ndim: int) -> Tensor:
    """(K,) OKS sigmas as Ultralytics' v8PoseLoss picks them: COCO's for 17 keypoints with visibility, else 1/K."""
    if (count, ndim) == (17, 3):
        return torch.from_numpy(OKS_SIGMA).float()
    return torch.full((count,), 1.0 / count)


def keypoint_location_kd(
    student_keypoints: Tensor, teacher_keypoints: Tensor, teacher_visibility: Tensor, area: Tensor, sigmas: Tensor
) -> Tensor:
    """OKS-form keypoint distillation, per anchor.

    Args:
        student_keypoints: (N, K, 2) student keypoints, pixels.
        teacher_keypoints: (N, K, 2) teacher keypoints, pixels (detached here).
        teacher_visibility: (N, K) teacher visibility probabilities in [0, 1] (detached here; ones for no channel).
        area: (N,) object area (assigned GT box w·h), pixels², > 0.
        sigmas: (K,) OKS sigmas.

    Returns:
        (N,) ``Σ_k v_k (1 - exp(-d_k² / (8 σ_k² area))) / Σ_k v_k``; 0 where the teacher sees no keypoint.
    """
    weight = teacher_visibility.detach()
    distance = (student_keypoints - teacher_keypoints.detach()).square().sum(-1)  # (N, K) pixels²
    error = distance / ((2 * sigmas).square() * area[:, None] * 2)
    return (weight * (1 - torch.exp(-error))).sum(-1) / weight.sum(-1).clamp(min=1e-9)


def keypoint_visibility_kd(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Binary KL of the visibility, per anchor.

    Args:
        student_logits: (N, K) student visibility logits.
        teacher_logits: (N, K) teacher visibility logits (detached here).

    Returns:
        (N,) mean over K of ``KL(σ(t) || σ(s))``.
    """
    teacher_logits = teacher_logits.detach()
    target = teacher_logits.sigmoid()
    kl = F.binary_cross_entropy_with_logits(student_logits, target, reduction="none")
    kl = kl - F.binary_cross_entropy_with_logits(teacher_logits, target, reduction="none")
    return kl.clamp(min=0).mean(-1)


@dataclass
class KeypointKDParams(LossParams):
    """Keypoint KD weights.

    Attributes:
        loc_weight: weight of the keypoint location term (default: Ultralytics' pose gain).
        vis_weight: weight of the keypoint visibility term (default: Ultralytics' kobj gain).
    """

    loc_weight: float = 12.0
    vis_weight: float = 1.0


class KeypointKDLoss(DistillLoss):
    """``kptkd_loc`` and ``kptkd_vis``, each ``weight · Σ_pos / N_pos``, on pose heads of one keypoint shape."""

    name = "kptkd"
    Params = KeypointKDParams
    task = "pose"
    task_outputs = "keypoints"
    term_suffixes = ("loc", "vis")

    def __init__(self, params: KeypointKDParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        self.register_buffer("sigmas", keypoint_sigmas(*student_head.keypoint_shape), persistent=False)

    def check_pair(self, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        """Both heads must be pose heads (the base check) with the same keypoint shape."""
        super().check_pair(teacher_head, student_head)
        if teacher_head.keypoint_shape != student_head.keypoint_shape:
            raise ValueError(
                f"loss 'kptkd' needs the same keypoints on both sides: teacher keypoint shape "
                f"{list(teacher_head.keypoint_shape)}, student {list(student_head.keypoint_shape)}"
            )

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        # Every anchor is computed and negatives are zeroed (a boolean gather would sync with the host each step).
        batch, anchors, count, _ = student.keypoints.shape
        fg = targets.fg_mask.reshape(-1).float()
        boxes = targets.target_boxes.float().reshape(-1, 4)
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1.0)  # pixels²
        has_visibility = teacher.keypoint_visibility is not None
        teacher_logits = teacher.keypoint_visibility.float().reshape(-1, count) if has_visibility else None
        visibility = teacher_logits.sigmoid() if has_visibility else student.keypoints.new_ones(batch * anchors, count)
        location = keypoint_location_kd(
            student.keypoints.float().reshape(-1, count, 2),
            teacher.keypoints.float().reshape(-1, count, 2),
            visibility,
            area,
            self.sigmas,
        )
        num_pos = targets.num_positives
        loc_name, vis_name = self.term_names
        terms = {loc_name: self.params.loc_weight * (fg * location).sum() / num_pos}
        if has_visibility:
            student_logits = student.keypoint_visibility.float().reshape(-1, count)
            vis = keypoint_visibility_kd(student_logits, teacher_logits)
            terms[vis_name] = self.params.vis_weight * (fg * vis).sum() / num_pos
        else:  # (K, 2) keypoints: no visibility to distil
            terms[vis_name] = student.keypoints.new_zeros(())
        return terms


__all__ = ["KeypointKDLoss", "KeypointKDParams", "keypoint_location_kd", "keypoint_sigmas", "keypoint_visibility_kd"]
