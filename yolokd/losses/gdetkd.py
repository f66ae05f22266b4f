"""G-DetKD: semantic-guided feature imitation (SGFI) and contrastive KD (CKD) on RoIs of a dense YOLO student.

Yao et al., "G-DetKD: Towards General Distillation Framework for Object Detectors via Contrastive and
Semantic-guided Feature Imitation", ICCV 2021, https://arxiv.org/abs/2108.07482 (no released code: the paper is the
reference).

SGFI (§4.1, eq. 1): for RoI i the teacher feature ``T_i`` is pooled from the level the RoI's scale assigns; the
student's from every level l, each mapped to the teacher's width by ``f_adapt``; an embedding network gives keys
``K = f_embed(.)``; level weights ``α_i = softmax_l(K_s^l · K_t / τ)`` with a learnable τ;
``L_feat = mean_i MSE(Σ_l α_i^l f_adapt(S_i^l), T_i)``. CKD (§4.2, eq. 2): RoI representations of both models, a
shared linear projection f, critic ``g = exp(cos(f(r_s), f(r_t)) / γ)``, InfoNCE with the same RoI's teacher
representation as the positive and the other RoIs plus a memory queue as negatives; negatives overlapping the RoI
by IoU > 0.5 are left out.

YOLO adaptation:
- RoIs follow the paper's dense-student recipe (§4.3.2, see ``gdetkd_rois``): the student's own predicted boxes
  matched to GT (IoU > 0.5), 1:3 positive:negative, GT boxes in the pool. ``rois_per_image`` is the cost knob
  (RoIAlign, adapters and embeddings scale with it): default 16, chosen for cost (benchmarks/README.md); the
  paper's Faster R-CNN sampler takes 512 from far fewer, larger images per step. RoIs are drawn afresh at every
  call, at validation too (the logged val terms are one-sample estimates).
- Levels: mmdetection's RoI-extractor rule ``⌊log2(√(wh) / s0)⌋`` on P3-P5 with s0 = 24 px: P3 < 48 px, P4 48-96 px,
  P5 > 96 px (COCO's "large"), boundaries between YOLOv5's per-level anchor sets (11-28 / 43-84 / 102-349 px).
  mmdetection's s0 = 56 assumes a P2 level and would send nearly every COCO object to P3.
- Widths: FPN levels share one width, YOLO neck levels do not (YOLOv8s: 128/256/512), so ``T_i`` keeps its own
  level's width: ``f_adapt`` is one 1x1 conv per (student level, teacher level) pair (the paper only says "a
  conv"; 1x1 as yolokd's aligners) and ``f_embed`` one network per teacher level: Conv3x3/2 -> ReLU -> Conv3x3/2 ->
  ReLU, which on the default 4x4 RoIs ends on one cell: the paper's vector (a mean over cells for larger RoIs).
  RoIs are pooled 4x4 (RoIAlign, aligned, one point per bin), not the paper's 7x7 Faster R-CNN RoIs: the cost
  of RoIAlign, adapters and embeddings scales with the area, 3x lower (``roi_size: 7`` restores it). Each teacher
  level only pools, adapts and embeds its own RoIs.
- τ = exp of a trained parameter (always positive), initialised to √embed_channels (scaled dot product).
- CKD representations: the stage-1 output of each model's cls tower (the input of the predictor: the paper's "last
  layer of the student's classification branch"), at the RoI's level, averaged over the RoI (RoIAlign, 4x4 points).
  YOLO is anchor-free (one prediction per cell), so the paper's per-anchor decoupling does not arise; for an
  anchor-based student (RetinaNet, 9 anchors per cell) it is not done either: the paper does not say how a location's
  feature is split into its anchors, and the cls tower's feature, what is pooled here, is one per cell. The shared
  projection needs one input width: a student-only linear aligner precedes it when the cls widths differ.
- Queue: raw teacher representations (the teacher is frozen, so they never go stale) projected with the current f
  at every step (without gradient: queued negatives are constants, as MoCo's queued keys), a validity flag and a
  FIFO pointer, all buffers: ``losses.state_dict()`` saves them for resume. Default 4096 entries (the paper's
  80x1024 held about 10 steps of its RoIs; 4096 holds 16 steps of 16 images x 16 RoIs). Overlap exclusion applies
  to in-batch negatives of the same image: queue entries come from earlier batches, i.e. other images (or the same
  image under another augmentation), whose box coordinates are not comparable, so they are never excluded and
  their boxes are not stored. Only training steps enqueue.
- Prediction KD (off by default, as in the paper's heterogeneous setting, its Table 1): the BCKD cls formula on every
  anchor, / N_pos (``pred_weight``); cell by cell when the two heads' anchor layouts differ (a RetinaNet with 9
  anchors per cell and a YOLO with one: ``yolokd.losses.common``).
- Centerness (FCOS students or teachers): not distilled, as in the reference: the paper's prediction KD is cls and
  box outputs only (its teachers are two-stage detectors, which have no centerness; §3, §4.3.2).
- Anchor-based students (RetinaNet): RoIs come from all their anchors' boxes and top scores.
- Class-aware regression KD (eq. 3) does not apply: it weights per-class box outputs ``reg^c`` by the teacher's
  class scores, and YOLO's box branch is class-agnostic (one 4·R distribution per anchor for every class), so
  ``Σ_c p_c (reg_t - reg_s)`` collapses to ``(Σ_c p_c)(reg_t - reg_s)``: score-weighted class-agnostic box KD, which
  BCKD's loc term and LD already provide.
- Head transfer (§4.3.1, ``init_head_from_teacher``): every teacher Detect tensor (parameters and buffers) whose name
  and shape match the student's is copied once when a fresh run is built (never on resume); copied and kept tensors
  are logged (with a warning when the head families differ: names and shapes can then match across different
  roles). The paper freezes the transferred heads; a partly copied YOLO head has to adapt, so nothing is frozen
  (Ultralytics' ``freeze`` can freeze the whole head).
- Terms ``gdetkd_sgfi`` and ``gdetkd_ckd`` are means over the batch's RoIs, weight 1.0 each (the paper sums
  L_gt + L_feat + L_ckd); the trainer multiplies them by the batch size, as for every method.
- OBB (rotated boxes): RoIAlign pools axis-aligned RoIs, so RoIs, their level, the IoU > 0.5 positive test and the
  CKD overlap exclusion use the boxes enclosing the student's rotated predictions and the rotated GT
  (``View.boxes``, ``Targets.gt_boxes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from ultralytics.utils import LOGGER, colorstr

from yolokd.losses.base import FEATURE_GRAD_SHARE, DistillLoss, LossParams
from yolokd.losses.bckd import bckd_cls_loss
from yolokd.losses.common import match_predictions
from yolokd.losses.gdetkd_rois import RepresentationQueue, RoiBatch, ckd_negative_mask, pool_rois, sample_rois
from yolokd.losses.gdetkd_terms import RoiKeyEmbedding, ckd_loss, semantic_level_weights, sgfi_loss
from yolokd.losses.gdetkd_transfer import HeadTransfer, transfer_head
from yolokd.views import HeadSpec, Targets, View, same_anchor_layout

if TYPE_CHECKING:
    from yolokd.heads.base import HeadAdapter

CKD_POINTS = 4  # RoIAlign points per side averaged into one CKD representation


@dataclass
class GDetKDParams(LossParams):
    """G-DetKD parameters (paper values where it gives one; see the module docstring for the others).

    Attributes:
        sgfi_weight: weight of ``gdetkd_sgfi`` (mean over RoIs of the per-RoI MSE).
        ckd_weight: weight of ``gdetkd_ckd`` (mean over RoIs of the InfoNCE loss).
        pred_weight: weight of the optional ``gdetkd_pred`` (BCKD cls formula / N_pos); 0 = off (no term logged).
        rois_per_image: RoI budget per image (the cost knob; the paper's sampler takes 512).
        positive_fraction: largest share of positive RoIs (0.25 = the paper's 1:3).
        positive_iou: a predicted box is a positive RoI above this IoU with a GT (paper 0.5).
        candidates_per_image: predicted boxes kept by score before matching (mmdetection's Faster R-CNN keeps 1000
            RPN proposals for training); 0 = all.
        finest_scale: s0 of the level rule in pixels: P3 below 2·s0, P4 below 4·s0, P5 above.
        roi_size: RoIAlign output side S for SGFI (paper 7; 4 makes f_embed end on one cell, at a third of the cost).
        embed_channels: width K of the SGFI keys.
        temperature_init: initial τ of SGFI (trained); None = √embed_channels.
        projection_dim: width P of CKD's shared projection (not given in the paper; 128 as in CRD).
        ckd_temperature: γ of the CKD critic (not given in the paper; 0.07 as in CRD and MoCo, which it builds on).
        queue_size: CKD memory queue entries Q (paper 80 x 1024); 0 = in-batch negatives only.
        negative_iou: same-image RoIs overlapping a RoI by more than this are not its negatives (paper 0.5).
        init_head_from_teacher: copy the teacher's head tensors of matching shape into the student (fresh runs).
    """

    grad_share: float = FEATURE_GRAD_SHARE  # a feature-level method (yolokd.losses.base)
    sgfi_weight: float = 1.0
    ckd_weight: float = 1.0
    pred_weight: float = 0.0
    rois_per_image: int = 16
    positive_fraction: float = 0.25
    positive_iou: float = 0.5
    candidates_per_image: int = 1000
    finest_scale: float = 24.0
    roi_size: int = 4
    embed_channels: int = 32
    temperature_init: float | None = None
    projection_dim: int = 128
    ckd_temperature: float = 0.07
    queue_size: int = 4096
    negative_iou: float = 0.5
    init_head_from_teacher: bool = False

    positive_fields = (
        "rois_per_image",
        "roi_size",
        "embed_channels",
        "projection_dim",
        "finest_scale",
        "ckd_temperature",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("candidates_per_image", "queue_size"):  # the *_weight fields are checked by LossParams
            if getattr(self, key) < 0:
                raise ValueError(f"{key}={getattr(self, key)} must be >= 0")
        if self.temperature_init is not None and self.temperature_init <= 0:
            raise ValueError(f"temperature_init={self.temperature_init} must be > 0 (or null for √embed_channels)")
        for key in ("positive_fraction", "positive_iou", "negative_iou"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key}={getattr(self, key)} must be in [0, 1]")


class GDetKDLoss(DistillLoss):
    """G-DetKD on a YOLO student: ``gdetkd_sgfi`` and ``gdetkd_ckd`` on sampled RoIs (+ ``gdetkd_pred`` if on)."""

    name = "gdetkd"
    Params = GDetKDParams
    term_suffixes = ("sgfi", "ckd")
    stage_parts = ("cls",)

    def __init__(self, params: GDetKDParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__(params, teacher_head, student_head)
        if params.pred_weight > 0:
            self.term_suffixes = ("sgfi", "ckd", "pred")
        if params.ckd_weight == 0:
            self.stage_parts = ()  # no stage hooks needed
        self.strides = teacher_head.strides
        self.per_anchor = same_anchor_layout(teacher_head, student_head)  # else prediction KD cell by cell
        student_widths, teacher_widths = student_head.feat_channels, teacher_head.feat_channels
        # adapt[t][s]: student level s -> teacher level t's width; embed[t]: keys at teacher level t's width
        self.adapt = nn.ModuleList(nn.ModuleList(nn.Conv2d(s, t, 1) for s in student_widths) for t in teacher_widths)
        self.embed = nn.ModuleList(RoiKeyEmbedding(t, params.embed_channels) for t in teacher_widths)
        initial_temperature = params.temperature_init or math.sqrt(params.embed_channels)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial_temperature)))
        student_cls, teacher_cls = student_head.stage_channels["cls"], teacher_head.stage_channels["cls"]
        self.ckd_aligner = nn.Identity() if student_cls == teacher_cls else nn.Linear(student_cls, teacher_cls)
        self.projection = nn.Linear(teacher_cls, params.projection_dim)
        self.queue = RepresentationQueue(params.queue_size, teacher_cls)

    @property
    def temperature(self) -> Tensor:
        """SGFI's τ (0-d, > 0, trained)."""
        return self.log_temperature.exp()

    def init_student(self, teacher: HeadAdapter, student: HeadAdapter) -> HeadTransfer | None:
        """Head transfer, when ``init_head_from_teacher``: called once by the trainer on fresh runs, logged."""
        if not self.params.init_head_from_teacher:
            return None
        if teacher.spec.family != student.spec.family:
            LOGGER.warning(
                f"gdetkd head transfer between different head families ({teacher.spec.family} -> "
                f"{student.spec.family}): tensors are matched by name and shape only, which here need not mean the "
                "same role; the paper transfers heads between homogeneous pairs"
            )
        transfer = transfer_head(teacher.head_state(), student.head_state())
        LOGGER.info(
            f"{colorstr('yolokd:')} gdetkd head transfer copied {len(transfer.copied)} teacher head tensors: "
            f"{', '.join(transfer.copied) or 'none'}; kept {len(transfer.skipped)} student tensors: "
            f"{', '.join(transfer.skipped) or 'none'}"
        )
        return transfer

    def sample(self, student: View, targets: Targets) -> RoiBatch:
        """This step's RoIs from the student's predictions, sorted by level."""
        params = self.params
        sample = sample_rois(
            student.boxes.detach().float(),
            student.cls_logits.detach().amax(dim=2),
            targets.gt_boxes.float(),
            targets.gt_mask,
            targets.image_size,
            params.rois_per_image,
            params.positive_fraction,
            params.positive_iou,
            params.candidates_per_image,
        )
        return RoiBatch.from_sample(sample, params.finest_scale, len(self.strides))

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        params = self.params
        rois = self.sample(student, targets)
        num_rois = rois.valid.sum().clamp(min=1).float()
        zero = student.cls_logits.new_zeros((), dtype=torch.float32)
        sgfi = self.sgfi_sum(student, teacher, rois) / num_rois if params.sgfi_weight > 0 else zero
        ckd = self.ckd_sum(student, teacher, rois) / num_rois if params.ckd_weight > 0 else zero
        values = [params.sgfi_weight * sgfi, params.ckd_weight * ckd]
        if params.pred_weight > 0:
            num_classes = student.cls_logits.shape[-1]
            matched = match_predictions(student, teacher, self.per_anchor)
            pred = bckd_cls_loss(
                matched.student_logits.float().reshape(-1, num_classes),
                matched.teacher_logits.float().reshape(-1, num_classes),
            )
            values.append(params.pred_weight * pred / targets.num_positives)
        return dict(zip(self.term_names, values, strict=True))

    def sgfi_sum(self, student: View, teacher: View, rois: RoiBatch) -> Tensor:
        """Σ over valid RoIs of the per-RoI SGFI MSE."""
        size = self.params.roi_size
        student_rois = [
            pool_rois(f.float(), rois.rois, s, size) for f, s in zip(student.feats, self.strides, strict=True)
        ]
        total = student_rois[0].new_zeros(())
        for level, rows in enumerate(rois.level_slices()):
            if rows.start == rows.stop:
                continue
            teacher_rois = pool_rois(teacher.feats[level].detach().float(), rois.rois[rows], self.strides[level], size)
            adapters = zip(self.adapt[level], student_rois, strict=True)
            adapted = torch.stack([adapt(feat[rows]) for adapt, feat in adapters], 1)  # (n, L, D_t, S, S)
            count, num_levels = adapted.shape[:2]
            keys = self.embed[level](torch.cat((adapted.flatten(0, 1), teacher_rois)))
            student_keys = keys[: count * num_levels].view(count, num_levels, -1)
            weights = semantic_level_weights(student_keys, keys[count * num_levels :], self.temperature)
            total = total + (sgfi_loss(adapted, teacher_rois, weights) * rois.valid[rows]).sum()
        return total

    def ckd_sum(self, student: View, teacher: View, rois: RoiBatch) -> Tensor:
        """Σ over valid RoIs of the CKD InfoNCE loss; enqueues the teacher representations when training."""
        student_reps, teacher_reps = [], []
        for level, rows in enumerate(rois.level_slices()):
            if rows.start == rows.stop:
                continue
            for reps, view in ((student_reps, student), (teacher_reps, teacher)):
                feat = view.stages["cls"][-1][level].float()  # the cls tower's last stage: the predictor's input
                reps.append(pool_rois(feat, rois.rois[rows], self.strides[level], 1, CKD_POINTS).flatten(1))
        teacher_rep = torch.cat(teacher_reps).detach()
        student_embed = self.projection(self.ckd_aligner(torch.cat(student_reps)))
        with torch.no_grad():  # queued negatives are constants, as MoCo's queued keys
            queue_embed = self.projection(self.queue.representations)
        negatives = ckd_negative_mask(rois.boxes, rois.image_index, rois.valid, self.params.negative_iou)
        negatives = torch.cat((negatives, self.queue.valid.expand(len(negatives), -1)), 1)
        per_roi = ckd_loss(
            student_embed,
            self.projection(teacher_rep),
            queue_embed,
            negatives,
            self.params.ckd_temperature,
        )
        if self.training:
            self.queue.push(teacher_rep, rois.valid)
        return (per_roi * rois.valid).sum()


# the functional core lives in gdetkd_terms and gdetkd_transfer; tests import it from here too
__all__ = [
    "GDetKDLoss",
    "GDetKDParams",
    "HeadTransfer",
    "ckd_loss",
    "semantic_level_weights",
    "sgfi_loss",
    "transfer_head",
]
