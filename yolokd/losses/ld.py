"""LD: Localization Distillation for Dense Object Detection.

Zheng et al., CVPR 2022, https://arxiv.org/abs/2102.12252 (code: https://github.com/HikariTJU/LD).

A DFL head predicts, per anchor and box side, a distribution over R bins. LD softens the teacher's and the
student's distributions with a temperature T and pulls the student's towards the teacher's with
``KL(softmax(d_t/T) || softmax(d_s/T)) * T²`` on the student's positive anchors, each weighted by the student's
own (detached) top class score ``w_a = sg(max_c σ(s_ac))``. Defaults T = 10, weight 0.25 (the authors' GFL configs).

YOLO adaptation: LD is about the size of DFL, as in the reference. The reference (mmdetection's ``LDHead`` on GFL)
averages the pointwise KL over the bins and the four sides (``KL'_a = dfl_kl / (4R)`` here) and SUMS
``0.25 · w_a · KL'_a`` over the positives of its per-GPU batch (2 images) without any normaliser, while its DFL is
``0.25 · Σ_pos w_a · DFL_a / S_r`` with ``S_r = Σ_pos w_a`` over those 2 images. Per anchor, LD's gradient is
therefore ``S_r`` times DFL's (for equal per-anchor KL' and DFL gradients), and the weight 0.25 was tuned for
that. An earlier yolokd version divided the sum by N_pos but kept 0.25, which made LD, relative to DFL, about
12 · N_pos / B times weaker than in the reference (hundreds of times at COCO-like object counts): effectively off.
yolokd now computes

    ld_loc = weight · (1.5 / 0.25) · 2 · Σ_pos w_a · KL'_a / B

(B = images in the batch; the trainer multiplies every term by B, as Ultralytics does for its own loss). Ultralytics'
DFL term is ``B · 1.5 · Σ_pos w_u · DFL_a / S_u`` (hyp ``dfl`` = 1.5, ``w_u`` the TAL target scores,
``S_u = target_scores_sum``), so per anchor the LD/DFL gradient ratio is ``2 · (S_u / B) · (w_a / w_u)`` times
``∇KL' / ∇DFL``: the reference's ``S_r`` whenever the score weights summed per image match (exactly so for B = 2
and ``w_a ∝ w_u``). ``weight`` keeps the paper's 0.25 and its meaning (LD relative to a 0.25 DFL). Positives are the
student's TAL assignment (``Targets.fg_mask``). LD needs DFL heads (reg_max > 1) with the same R on both sides:
YOLO26 and FCOS (reg_max = 1, direct ltrb) and RetinaNet (reg_max = 1, anchor deltas) are refused when the run is
built; use ``bckd`` (IoU-based localisation KD) or ``crosskd`` (GIoU for reg_max = 1 teachers) instead.

Balance: LD's own scale is its rule (``grad_share: None``), so ``weight_mode: auto`` leaves it at scale 1 and only
measures it. Its normalisation above is the transferable part: it keeps LD next to the GT DFL term as the reference
does, and like the reference's, LD weighs each positive by the student's own score, so it is weak while the student
cannot yet score its objects and grows as it learns (gradient share of the GT loss's at initialisation: 8e-4 on a
from-scratch YOLOv8n, 0.27 on a from-scratch GFL-n with a YOLOv8s teacher, 1.1 on the fine-tuned YOLOv8n of the
evidence benchmark; README "LD's scale"). Measured against scaling it to a share of 1 from the first step (3 seeds
each, gain vs baseline): from-scratch YOLOv8n +0.008 (was -0.023), pretrained YOLOv8n -0.001 (was +0.003), both noise;
a GFL-n student with a YOLOv8s teacher -0.024 (was -0.028), worse at either scale. ``grad_share: 1.0`` in the config
restores the rescaling.

OBB (rotated boxes): an OBB head's distributions are the ltrb distances in the frame of the anchor's own angle, so
LD distils them as for detect (the teacher's angle fixes that frame); the angle itself is ``anglekd``'s term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from yolokd.losses.base import DistillLoss, LossParams
from yolokd.views import HeadSpec, Targets, View

# Ultralytics' DFL gain (default hyp ``dfl``): the DFL term LD is sized against.
ULTRALYTICS_DFL_GAIN = 1.5
# The reference's DFL loss_weight (mmdetection GFL/LD configs): the weight 0.25 of LD was tuned next to it.
REFERENCE_DFL_WEIGHT = 0.25
# Images per GPU in the reference configs: its un-normalised LD sum runs over this many images.
REFERENCE_IMAGES_PER_GPU = 2


def dfl_kl(student_dist: Tensor, teacher_dist: Tensor, temperature: float) -> Tensor:
    """Softened KL divergence between box-side distributions, per anchor.

    Args:
        student_dist: (N, 4, R) student DFL bin logits (ltrb sides).
        teacher_dist: (N, 4, R) teacher DFL bin logits (detached here).
        temperature: T > 0.

    Returns:
        (N,) ``Σ_sides Σ_bins softmax(t/T) (log softmax(t/T) - log softmax(s/T)) * T²``, clamped at 0 (float
        rounding makes the KL of near-equal distributions slightly negative otherwise).
    """
    teacher_log_probs = F.log_softmax(teacher_dist.detach() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_dist / temperature, dim=-1)
    pointwise = teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)
    return pointwise.sum(dim=(1, 2)).clamp(min=0) * temperature**2


@dataclass
class LDParams(LossParams):
    """LD weight and temperature (the authors' GFL defaults).

    Attributes:
        weight: weight of the localisation distillation term.
        temperature: T, softens both distributions; the KL is multiplied by T².
        grad_share: None (the default): LD keeps its own, reference-sized scale in ``weight_mode: auto`` (module
            docstring, "Balance"); a number scales it to that share of the GT gradient as any other method.
    """

    weight: float = 0.25
    temperature: float = 10.0
    grad_share: float | None = None

    positive_fields = ("temperature",)


class LDLoss(DistillLoss):
    """LD on a YOLO DFL head: ``ld_loc = weight * (1.5 / 0.25) * 2 * Σ_pos sg(max_c σ(s)) * dfl_kl / (4R) / B``."""

    name = "ld"
    Params = LDParams
    term_suffixes = ("loc",)

    def check_pair(self, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        """Both heads must be DFL heads with the same number of bins."""
        super().check_pair(teacher_head, student_head)
        for role, head in (("teacher", teacher_head), ("student", student_head)):
            if head.reg_max <= 1:
                raise ValueError(
                    f"loss 'ld' distils DFL box distributions, but the {role} ({head.family}) has reg_max="
                    f"{head.reg_max} (direct box regression, no distribution). Use 'bckd' (IoU-based localisation "
                    "KD) or 'crosskd' (GIoU for reg_max=1 teachers) instead"
                )
        if teacher_head.reg_max != student_head.reg_max:
            raise ValueError(
                f"loss 'ld' needs the same DFL bins on both sides: teacher reg_max={teacher_head.reg_max}, student "
                f"reg_max={student_head.reg_max}. Use 'bckd' (compares decoded boxes) instead"
            )

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        reg_max = student.reg_max
        student_dist = student.box_distribution().float().reshape(-1, 4, reg_max)
        teacher_dist = teacher.box_distribution().float().reshape(-1, 4, reg_max)
        # Every anchor is computed and negatives are zeroed (a boolean gather would sync with the host each step).
        score_weight = student.cls_logits.detach().float().amax(dim=-1).sigmoid() * targets.fg_mask  # (B, A)
        kl = dfl_kl(student_dist, teacher_dist, self.params.temperature) / (4 * reg_max)
        # Σ over the positives of B images, scaled to the reference's 2-image sum next to a 0.25 DFL (docstring).
        scale = ULTRALYTICS_DFL_GAIN / REFERENCE_DFL_WEIGHT * REFERENCE_IMAGES_PER_GPU / student.batch_size
        term = (score_weight.reshape(-1) * kl).sum() * scale
        return {self.term_names[0]: self.params.weight * term}


__all__ = ["LDLoss", "LDParams", "dfl_kl"]
