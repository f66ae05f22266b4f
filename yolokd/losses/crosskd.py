"""CrossKD: Cross-Head Knowledge Distillation for Object Detection.

Wang et al., CVPR 2024, https://arxiv.org/abs/2306.11369 (code: https://github.com/jbwang1997/CrossKD).

The student's intermediate head features are fed into the teacher's remaining head layers; the resulting
cross-head predictions mimic the teacher's own predictions. The KD gradient reaches the student through the
frozen teacher layers, so the student's head after the cut is trained by the GT loss alone ("target conflict"
avoided). Classification: the BCKD/QFL-style binary KD on cross-head logits, / N_pos, weight 1.0. Regression:
for DFL heads a per-side KL between the teacher's and the cross-head bin distributions (T = 1), weighted by the
teacher's top class score ``w_a = σ(max_c t_ac)`` and normalised by ``Σ_a w_a``, weight 4.0.

YOLO adaptation:
- Cut point. A Detect tower is Conv -> Conv -> 1x1 predictor, so the paper's best cut (i = 3 of a 4-conv tower)
  becomes ``stage = 1``: the pre-activation (BN output) of stage 0 of the box and of the cls tower (for YOLO11/26
  cls towers, DWConv -> Conv1x1, of the 1x1 Conv), then the teacher's SiLU, stage 1 and predictor. ``stage = 0``
  runs the teacher's whole towers on the neck features; ``stage = 2`` runs the teacher's predictors on the
  student's stage-1 outputs (post-activation; the authors' code would cut before that activation).
- Compatibility. The student tensor goes through a 1x1 aligner (train-only) and a per-channel moment alignment to
  the teacher's statistics over B·H·W (``moment_align``; in the authors' code for every detector, not in the paper
  text). The teacher's tail therefore only sees features at its own width and scale, so any two Detect-family heads
  work together (YOLO11s teacher -> YOLOv8n student included). Cross-head predictions are in the teacher's format:
  the box term follows the teacher's reg_max, whatever the student's.
- Aligner (``aligner_fit``, default on; a yolokd addition). The paper pairs channel i of the student with channel i
  of the teacher (identity at equal widths, a random 1x1 conv otherwise). That pairing only means something when
  both were trained together; a student fine-tuned from its own checkpoint has its head in another basis, so the
  teacher's tail reads noise (``benchmarks/crosskd_basis.py``: box KL 0.85 through the identity, 0.19 through a
  least-squares 1x1 map, on the evidence benchmark's pretrained pair) and the KD gradient asks the student to
  rotate its basis. Default: a 1x1 conv at every width, fitted by least squares on the first training batch
  (:class:`~yolokd.losses.common.FittedAligner`), then trained. For a student at initialisation the fit changes
  nothing measurable (0.79 against 0.82); ``aligner_fit: false`` is the paper's pairing.
- Pre-activations. The cut's BN outputs are recorded before the teacher's in-place SiLU would overwrite them
  (:func:`yolokd.heads.recorder.keep_preactivations`).
- Box term. DFL teachers: the KL is summed over bins and averaged over the four sides (the authors'
  ``avg_factor=4``), on every anchor (the authors' code; the paper's text says foreground only). Their GFL config
  adds a GIoU term (KL 3.0 + GIoU 2.0); yolokd keeps the KL alone at 4.0. Direct-regression teachers (YOLO26,
  reg_max = 1) get the paper's GIoU on decoded boxes instead, weighted by the same ``w_a``, divided by N_pos.
- Branch. ``one2many`` by default: Ultralytics detaches the one2one head's inputs, so on ``one2one`` the KD
  gradient stops inside the student's one2one head (and ``stage = 0`` would train the aligner only: refused),
  while on one2many it reaches the head stages before the cut, the neck and the backbone.
- Precision. Under CUDA AMP the teacher is stored in fp16: the cross pass runs in the teacher's dtype with
  autocast off and returns fp32 (the teacher adapter's ``run_tail``); the KD maths stays fp32.
- Anchors per cell. The cross-head predictions come out of the teacher's predictors, so they have the teacher's
  anchor layout whatever the student's: a RetinaNet teacher's k = 9 anchors per cell are compared with its own nine
  (the per-level outputs flattened as the views flatten them), and a student of another k (YOLOv8n under a
  RetinaNet teacher, RetinaNet under a YOLO teacher) needs no matching: only its features cross. RetinaNet teachers
  (deltas, reg_max = 1) get the GIoU term, the paper's choice for anchor-box regression, on boxes the teacher's
  adapter decodes from the cross-head and the teacher's deltas. N_pos is the student's.
- Segment and OBB heads. The cross pass runs the box and cls towers, which these heads share with Detect; the mask
  and angle towers are not crossed (mask KD and angle KD are ``maskkd``/``anglekd``). On OBB the box KD compares
  ltrb distances, which live in the frame of the teacher's angle at that anchor (the cross-head box and the
  teacher's box share it): the DFL KL for DFL heads, and for OBB26 (reg_max = 1) the GIoU of the two boxes in that
  frame (the adapter's ``decode_in_box_frame``).
- Centerness (teachers with a centerness branch: FCOS). Off by default, as in the authors' FCOS config
  (``configs/crosskd/crosskd_r50_fcos_r101-2x-ms_caffe_fpn_gn-head_2x_ms_coco.py``: ``CrossKDFCOS`` computes the
  cross-head centerness but no loss reads it; only cls and box KD). Their ATSS config
  (``crosskd_r50_atss_r101_fpn_1x_coco.py``, ``CrossKDATSS``) distils it: ``loss_center_kd`` =
  ``BCE(ĉ_a, σ(c_t,a))`` over the student's positive anchors / N_pos, weight 1.0, ĉ the teacher's centerness predictor
  on the cross-head box tower. ``ctr_weight > 0`` adds that term as ``crosskd_ctr`` (``ctr_weight: 1.0`` = the ATSS
  config) for a teacher with a centerness branch; the student needs none (its features cross). A teacher without one
  (YOLO, GFL, RetinaNet) has no cross-head centerness: ``ctr_weight > 0`` is refused when the run is built. It is a
  plain BCE with soft targets, as in the code: its value at ĉ = c_t is the teacher's binary entropy, not 0 (its
  gradient is 0 there). The positives are the student's; under a different anchor layout, a teacher anchor is
  positive when its cell holds a student positive, and the sum is divided by the number of such teacher anchors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss

from yolokd.losses.base import DistillLoss, LossParams
from yolokd.losses.bckd import bckd_cls_loss
from yolokd.losses.common import ChannelAligner, FittedAligner, stage_aligners
from yolokd.losses.ld import dfl_kl
from yolokd.views import PREACTIVATION, HeadSpec, Targets, View, flatten_anchors

if TYPE_CHECKING:
    from yolokd.heads.base import HeadAdapter

PARTS = ("box", "cls")
# Detect-family towers have 2 stages (Conv -> Conv -> predictor), the shared towers of GFL, FCOS and RetinaNet 4;
# check_pair checks the actual heads of a pair.
VALID_STAGES = (0, 1, 2, 3, 4)


def _centred_moments(feat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B, D, H, W) -> (feat - mean, mean, population std), statistics per channel over B·H·W, shaped (1, D, 1, 1).

    The std is a vector norm of the centred tensor: on CPU ~5x faster than ``torch.std_mean`` over dims (0, 2, 3).
    """
    dims = (0, 2, 3)
    mean = feat.mean(dim=dims, keepdim=True)
    centred = feat - mean
    std = torch.linalg.vector_norm(centred, dim=dims, keepdim=True) / (feat.numel() // feat.shape[1]) ** 0.5
    return centred, mean, std


def center_kd_loss(cross_logits: Tensor, teacher_logits: Tensor, weights: Tensor | None = None) -> Tensor:
    """Centerness KD of CrossKD's ATSS config (``loss_center_kd``: sigmoid cross-entropy with soft targets), summed.

    Args:
        cross_logits: (...) cross-head centerness logits.
        teacher_logits: (...) teacher centerness logits (detached here).
        weights: (...) per-anchor weights (e.g. 1 on positives, 0 elsewhere), or None for all ones.

    Returns:
        0-d tensor: ``Σ w · BCE(ĉ, σ(c_t))``, BCE = ``-(p log σ(ĉ) + (1 - p) log(1 - σ(ĉ)))``, p = σ(c_t).
    """
    bce = F.binary_cross_entropy_with_logits(cross_logits, teacher_logits.detach().sigmoid(), reduction="none")
    return (bce if weights is None else bce * weights).sum()


def positives_in_layout(fg_mask: Tensor, student_per_cell: int, teacher_per_cell: int) -> Tensor:
    """(B, A_s) student positive anchors -> (B, A_t) in the teacher's anchor layout: the mask itself when both have k
    anchors per cell, else every teacher anchor of a cell that holds a student positive."""
    if student_per_cell == teacher_per_cell:
        return fg_mask
    cells = fg_mask.unflatten(-1, (-1, student_per_cell)).any(-1)  # (B, cells)
    return cells.repeat_interleave(teacher_per_cell, dim=1)


def moment_align(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Give the student feature the teacher's per-channel mean and standard deviation.

    ``ĥ = (h_s - μ_s) / (σ_s + 1e-6) * σ_t + μ_t``, statistics per channel over B·H·W (population std; the
    authors' unbiased std gives the same ĥ up to the 1e-6).

    Args:
        student_feat: (B, D, H, W) student feature (already at the teacher's width D).
        teacher_feat: (B, D, H, W) teacher feature (detached here).

    Returns:
        (B, D, H, W) aligned student feature; invariant to a positive per-channel affine change of the student's.
    """
    student_centred, _, student_std = _centred_moments(student_feat)
    _, teacher_mean, teacher_std = _centred_moments(teacher_feat.detach())
    return student_centred / (student_std + 1e-6) * teacher_std + teacher_mean


@dataclass
class CrossKDParams(LossParams):
    """CrossKD cut point and weights (paper defaults, cut mapped onto the 2-stage YOLO towers).

    Attributes:
        stage: where the student's towers are cut: 0 = neck features into the teacher's whole towers, 1 = stage-0
            pre-activation into the teacher's SiLU, stage 1 and predictor (the paper's best i=3), 2 = stage-1 output
            into the teacher's predictors. Shared-tower heads (GFL, FCOS, RetinaNet: 4 stages): s in 1..3 = the
            pre-activation (GroupNorm output; RetinaNet's conv output) of stage s-1 into the teacher's ReLU and stages
            s..3 (3 is the paper's i=3), 4 = the last stage's output into the predictors.
        cls_weight: weight of the cross-head classification KD (binary KD, / N_pos).
        loc_weight: weight of the cross-head box KD (DFL KL / Σ w, or GIoU / N_pos for reg_max=1 teachers).
        temperature: T of the DFL KL (the KL is multiplied by T²).
        ctr_weight: weight of the cross-head centerness KD ``crosskd_ctr`` (teachers with a centerness branch, FCOS);
            0 = off, as in the authors' FCOS config; 1.0 = their ATSS config's ``loss_center_kd``.
        aligner_fit: a 1x1 aligner at every width (equal widths included), fitted by least squares from the student's
            cut features to the teacher's on the first training batch, then trained
            (:class:`~yolokd.losses.common.FittedAligner`). False: the paper's pairing (identity at equal widths, a
            randomly initialised 1x1 conv where they differ).
    """

    stage: int = 1
    cls_weight: float = 1.0
    loc_weight: float = 4.0
    temperature: float = 1.0
    ctr_weight: float = 0.0
    aligner_fit: bool = True

    positive_fields = ("temperature",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage not in VALID_STAGES:
            raise ValueError(
                f"stage={self.stage} is out of range: valid stages are {', '.join(map(str, VALID_STAGES))} "
                "(0 = neck features, 1 = after the first conv of each tower, ..., the tower's stage count = before the "
                "predictor: 2 on YOLO heads, 4 on GFL's)"
            )
        if self.stage == 0 and self.branch == "one2one":
            raise ValueError(
                "stage=0 cannot distil the one2one branch: Ultralytics detaches that branch's neck inputs, so only "
                "the aligner would learn; use stage 1 or 2, or branch one2many"
            )


class CrossKDLoss(DistillLoss):
    """CrossKD on a YOLO head: ``crosskd_cls`` and ``crosskd_loc`` from the student-into-teacher cross-head pass (+
    ``crosskd_ctr`` with ``ctr_weight > 0``)."""

    name = "crosskd"
    Params = CrossKDParams
    term_suffixes = ("cls", "loc")

    def __init__(
        self, params: CrossKDParams, teacher_head: HeadSpec, student_head: HeadSpec, teacher_adapter: HeadAdapter
    ) -> None:
        super().__init__(params, teacher_head, student_head)
        self.teacher_adapter = teacher_adapter  # a plain object: the teacher never joins this module's params
        if params.ctr_weight > 0:
            self.term_suffixes = ("cls", "loc", "ctr")
        stage = params.stage
        # Cut at a stage's pre-activation (the teacher applies its own activation), except before the teacher's
        # predictor (stage == its stage count), where the student's last stage output goes in as it is.
        self.preactivation = 0 < stage < teacher_head.num_stages
        self.stage_parts = tuple(p + PREACTIVATION for p in PARTS) if self.preactivation else PARTS if stage else ()
        if stage == 0:
            aligner = FittedAligner if params.aligner_fit else ChannelAligner
            self.aligners = nn.ModuleDict({"feats": aligner(student_head.feat_channels, teacher_head.feat_channels)})
        else:
            self.aligners = stage_aligners(student_head, teacher_head, PARTS, fitted=params.aligner_fit)

    @classmethod
    def from_heads(cls, params: CrossKDParams, teacher: HeadAdapter, student: HeadAdapter) -> CrossKDLoss:
        """CrossKD keeps the teacher's adapter: the cross-head pass runs the teacher's head layers through it."""
        return cls(params, teacher.spec, student.spec, teacher)

    def check_pair(self, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        """Both towers must have the stage the cut needs (the student records it, the teacher runs from it)."""
        super().check_pair(teacher_head, student_head)
        for role, head in (("teacher", teacher_head), ("student", student_head)):
            if self.params.stage > head.num_stages:
                raise ValueError(
                    f"crosskd stage={self.params.stage} needs {self.params.stage} head stages before the predictor, "
                    f"but the {role} ({head.family}) has {head.num_stages}"
                )
        if self.params.ctr_weight > 0 and not teacher_head.centerness:
            raise ValueError(
                f"crosskd ctr_weight={self.params.ctr_weight} distils the teacher's centerness, but the teacher "
                f"({teacher_head.family}) has no centerness branch; set ctr_weight: 0 (the default) or use a teacher "
                "with one (FCOS)"
            )

    def _cut_inputs(self, view: View, part: str) -> list[Tensor]:
        """L tensors (B, D, H_l, W_l) where the towers are cut: neck features, or stage ``stage - 1``'s pre-activation
        (output when it is the teacher's last stage)."""
        stage = self.params.stage
        if stage == 0:
            return view.feats
        key = part + PREACTIVATION if self.preactivation else part
        return view.stages[key][stage - 1]

    def cross_head_outputs(self, student: View, teacher: View) -> dict[str, Tensor]:
        """Student features through the teacher's tail: ``{"box": (B, A, 4R_t), "cls": (B, A, C)}`` (+ ``"centerness"``
        (B, A) logits with ``ctr_weight > 0``), in the teacher's anchor layout, differentiable."""
        stage = self.params.stage
        aligned: dict[str, list[Tensor]] = {}
        for part in PARTS:
            if stage == 0 and aligned:  # both towers start from the same neck features
                aligned[part] = aligned[PARTS[0]]
                continue
            aligner = self.aligners["feats" if stage == 0 else part]
            teacher_inputs = [feat.float() for feat in self._cut_inputs(teacher, part)]
            student_inputs = aligner([feat.float() for feat in self._cut_inputs(student, part)], teacher_inputs)
            aligned[part] = [moment_align(s, t) for s, t in zip(student_inputs, teacher_inputs, strict=True)]
        per_level: dict[str, list[Tensor]] = {}
        branch, preactivation, adapter = self.params.branch, self.preactivation, self.teacher_adapter
        for part in PARTS:
            for level, x in enumerate(aligned[part]):
                if part == "box" and self.params.ctr_weight > 0:  # the box tower's tail also gives the centerness
                    level_outputs = adapter.run_tail_outputs(branch, part, level, stage, x, preactivation=preactivation)
                else:
                    level_outputs = {part: adapter.run_tail(branch, part, level, stage, x, preactivation=preactivation)}
                for name, out in level_outputs.items():
                    per_level.setdefault(name, []).append(out)
        per_cell = adapter.spec.anchors_per_cell  # the predictors' k*C / k*4R / k channels -> A
        outputs = {
            name: torch.cat([flatten_anchors(out, per_cell) for out in outs], dim=2).transpose(1, 2)
            for name, outs in per_level.items()
        }
        if "centerness" in outputs:
            outputs["centerness"] = outputs["centerness"].squeeze(-1)  # (B, A, 1) -> (B, A)
        return outputs

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        cross = self.cross_head_outputs(student, teacher)
        num_classes = teacher.cls_logits.shape[-1]
        teacher_logits = teacher.cls_logits.detach().float().reshape(-1, num_classes)
        num_pos = targets.num_positives
        cls_term = bckd_cls_loss(cross["cls"].reshape(-1, num_classes), teacher_logits) / num_pos
        box_weight = teacher_logits.amax(dim=-1).sigmoid()  # (B*A,) w_a = σ(max_c t_ac)
        if teacher.reg_max > 1:
            loc_term = self._distribution_term(cross["box"], teacher, box_weight)
        else:
            loc_term = self._giou_term(cross["box"], teacher, box_weight) / num_pos
        terms = [self.params.cls_weight * cls_term, self.params.loc_weight * loc_term]
        if self.params.ctr_weight > 0:
            terms.append(self.params.ctr_weight * self._centerness_term(cross["centerness"], student, teacher, targets))
        return dict(zip(self.term_names, terms, strict=True))

    def _centerness_term(self, cross_centerness: Tensor, student: View, teacher: View, targets: Targets) -> Tensor:
        """``Σ_pos BCE(ĉ_a, σ(c_t,a)) / #pos`` on (B, A) cross-head centerness logits, positives in the teacher's
        layout (module docstring)."""
        positives = positives_in_layout(targets.fg_mask, student.anchors_per_cell, teacher.anchors_per_cell)
        weights = positives.to(torch.float32)
        ctr_sum = center_kd_loss(cross_centerness.float(), teacher.centerness.detach().float(), weights)
        return ctr_sum / weights.sum().clamp(min=1)

    def _distribution_term(self, cross_box: Tensor, teacher: View, box_weight: Tensor) -> Tensor:
        """DFL teachers: ``Σ_a w_a * mean_sides KL * T² / Σ_a w_a`` on (B, A, 4R) cross-head bin logits."""
        reg_max = teacher.reg_max
        teacher_dist = teacher.box_distribution().detach().float().reshape(-1, 4, reg_max)
        kl = dfl_kl(cross_box.reshape(-1, 4, reg_max), teacher_dist, self.params.temperature) / 4
        return (box_weight * kl).sum() / box_weight.sum().clamp(min=torch.finfo(torch.float32).tiny)

    def _giou_term(self, cross_box: Tensor, teacher: View, box_weight: Tensor) -> Tensor:
        """reg_max=1 teachers: ``Σ_a w_a (1 - GIoU)`` on boxes decoded from (B, A, 4) ltrb, grid units.

        Boxes are decoded in their own frame (the image for axis-aligned heads, the teacher's angle for OBB26); the
        adapter clamps negative distances at 0 (a flipped box has no defined GIoU). GIoU is scale-invariant per
        anchor, so grid units need no stride.
        """
        anchors = teacher.anchors
        decode = self.teacher_adapter.decode_in_box_frame
        cross_boxes = decode(cross_box, anchors)
        teacher_boxes = decode(teacher.box_output.detach().float(), anchors)
        giou = generalized_box_iou_loss(cross_boxes.reshape(-1, 4), teacher_boxes.reshape(-1, 4), reduction="none")
        return (box_weight * giou).sum()


__all__ = ["CrossKDLoss", "CrossKDParams", "center_kd_loss", "moment_align", "positives_in_layout"]
