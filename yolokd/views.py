"""The data types every loss reads: what one forward recorded for one model (:class:`View`), the student's label
assignment (:class:`Targets`) and what a method may know about a head (:class:`HeadSpec`).

A leaf: this module imports nothing of yolokd, so losses, head adapters, the engine and the config all import it
without importing each other. Nothing here holds a model or a module: head adapters (``yolokd.heads``) fill these
types in, losses read them.

Shape alphabet (used everywhere in yolokd): B batch, L levels, A anchors over all levels, C classes,
R reg_max (DFL bins per side; 1 for direct-regression heads such as YOLO26), M GT boxes per image (padded),
D channels, k anchors per cell (1 for anchor-free heads, 9 for RetinaNet).

Anchor layout: A runs over levels (P3 first), then over the cells of a level (row-major), then over the k anchors of
a cell, so a cell's k anchors are contiguous (mmdetection's order; Ultralytics' for k = 1). A cell index is
``anchor index // k``; per-cell quantities of a view are those of its anchors ``[::k]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

PREACTIVATION = "_preact"  # part-name suffix (``box_preact``): a stage's BN output, before its activation


@dataclass
class View:
    """Outputs of one dense-head branch of one model for one batch.

    Teacher views are built under ``torch.no_grad()``: every tensor in them is detached.

    Attributes:
        feats: L tensors (B, D_l, H_l, W_l), the neck outputs that feed the head (Detect inputs).
        cls_logits: (B, A, C) class logits (pre-sigmoid), levels concatenated P3 -> P5.
        box_output: (B, A, 4*R) raw box output: DFL bin logits for R > 1; for R == 1 the head's direct regression,
            ltrb distances in grid units (YOLO26, FCOS) or (dx, dy, dw, dh) deltas to the anchor box (RetinaNet).
        boxes: (B, A, 4) decoded boxes, xyxy, pixels (OBB heads: the axis-aligned box enclosing ``rboxes``).
        anchors: (A, 2) anchor centres, grid units of their own level (cell centre = index + 0.5); the k anchors of a
            cell share its centre.
        strides: (A, 1) stride of each anchor's level, pixels per grid unit.
        reg_max: R.
        anchors_per_cell: k (see the module docstring for the layout).
        stages: per branch part a list over stages of L tensors (B, D, H_l, W_l), recorded by forward hooks:
            ``"box"``/``"cls"`` hold each stage's output (post-activation), ``"box_preact"``/``"cls_preact"`` its
            pre-activation (BN output). Empty unless a loss asks for them (``DistillLoss.stage_parts``).
        mask_coefficients: segment heads only, else None: (B, A, K) mask coefficients per anchor (K prototypes;
            K may differ between teacher and student).
        prototypes: segment heads only, else None: (B, K, H_m, W_m) mask prototypes (H_m = H / 4 for Ultralytics'
            Proto); an anchor's mask logits are ``mask_coefficients[b, a] @ prototypes[b]`` (pre-sigmoid).
        angles: OBB heads only, else None: (B, A, 1) predicted rotation, radians (``OBB``: in [-pi/4, 3pi/4);
            ``OBB26``: unbounded, as its head outputs it; a box's angle matters modulo pi).
        rboxes: OBB heads only, else None: (B, A, 5) decoded rotated boxes, xywhr (centre, size in pixels, angle
            in radians); ``box_output`` holds the ltrb distances in each box's own rotated frame.
        keypoints: pose heads only, else None: (B, A, K, 2) decoded keypoints (x, y), pixels (K keypoints).
        keypoint_visibility: pose heads with a visibility channel only, else None: (B, A, K) visibility logits.
        centerness: heads with a centerness branch only (FCOS; ``HeadSpec.centerness``), else None: (B, A) centerness
            logits (pre-sigmoid), one per anchor.
    """

    feats: list[Tensor]
    cls_logits: Tensor
    box_output: Tensor
    boxes: Tensor
    anchors: Tensor
    strides: Tensor
    reg_max: int
    anchors_per_cell: int = 1
    stages: dict[str, list[list[Tensor]]] = field(default_factory=dict)
    mask_coefficients: Tensor | None = None
    prototypes: Tensor | None = None
    angles: Tensor | None = None
    rboxes: Tensor | None = None
    keypoints: Tensor | None = None
    keypoint_visibility: Tensor | None = None
    centerness: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """B."""
        return self.cls_logits.shape[0]

    @property
    def level_sizes(self) -> list[int]:
        """Anchors per level (H_l * W_l * k), in the order of ``feats``."""
        return [f.shape[2] * f.shape[3] * self.anchors_per_cell for f in self.feats]

    def cell_points(self) -> Tensor:
        """(A / k, 2) cell centres, pixels, levels concatenated (one row per cell, in the order of A)."""
        step = self.anchors_per_cell
        return self.anchors[::step] * self.strides[::step]

    def box_distribution(self) -> Tensor:
        """(B, A, 4, R) DFL bin logits; only defined for R > 1."""
        if self.reg_max <= 1:
            raise ValueError("box_distribution() needs a DFL head (reg_max > 1); this head regresses ltrb directly")
        return self.box_output.view(*self.box_output.shape[:2], 4, self.reg_max)


@dataclass
class Targets:
    """The student's label assignment for one branch, computed once per step and shared by every loss.

    Attributes:
        fg_mask: (B, A) bool, anchors the assigner made positive.
        gt_index: (B, A) long, index into the image's M GT boxes of each anchor's matched GT (valid where fg_mask).
        target_boxes: (B, A, 4) assigned GT box per anchor, xyxy, pixels (valid where fg_mask); for rotated GT the
            axis-aligned box enclosing it.
        gt_boxes: (B, M, 4) GT boxes padded per image, xyxy, pixels (rotated GT: the enclosing box).
        gt_labels: (B, M) long GT classes (padding rows are 0 and masked out by ``gt_mask``).
        gt_mask: (B, M) bool, True for real GT rows.
        image_size: (2,) tensor (H, W) of the network input, pixels.
        target_rboxes: rotated GT (OBB) only, else None: (B, A, 5) assigned GT box per anchor, xywhr, pixels/radians.
        gt_rboxes: rotated GT (OBB) only, else None: (B, M, 5) GT boxes padded per image, xywhr, pixels/radians.
    """

    fg_mask: Tensor
    gt_index: Tensor
    target_boxes: Tensor
    gt_boxes: Tensor
    gt_labels: Tensor
    gt_mask: Tensor
    image_size: Tensor
    target_rboxes: Tensor | None = None
    gt_rboxes: Tensor | None = None

    @property
    def num_positives(self) -> Tensor:
        """N_pos: student foreground anchors in the batch, clamped >= 1, as a 0-d float tensor (no host sync)."""
        return self.fg_mask.sum().clamp(min=1).to(torch.float32)


def flatten_anchors(level_output: Tensor, anchors_per_cell: int = 1) -> Tensor:
    """One level's predictor output (B, k*K, H, W) -> (B, K, H*W*k) in the anchor layout of the module docstring.

    The k*K channels are anchor-major (anchor a's K values are channels ``a*K .. a*K + K - 1``, mmdetection's
    convention); for k = 1 this is ``flatten(2)``.
    """
    if anchors_per_cell == 1:
        return level_output.flatten(2)
    batch, channels, height, width = level_output.shape
    per_anchor = channels // anchors_per_cell
    out = level_output.view(batch, anchors_per_cell, per_anchor, height, width).permute(0, 2, 3, 4, 1)
    return out.reshape(batch, per_anchor, height * width * anchors_per_cell)


def cell_max(values: Tensor, anchors_per_cell: int) -> Tensor:
    """(..., A) per-anchor values -> (..., A / k), the largest over each cell's k anchors (identity for k = 1)."""
    if anchors_per_cell == 1:
        return values
    return values.unflatten(-1, (-1, anchors_per_cell)).amax(-1)


def enclosing_boxes(rboxes: Tensor) -> Tensor:
    """(..., 5) rotated boxes xywhr -> (..., 4) the axis-aligned boxes enclosing them, xyxy, same units."""
    centre, size, angle = rboxes[..., :2], rboxes[..., 2:4], rboxes[..., 4:5]
    cos, sin = angle.cos().abs(), angle.sin().abs()
    half_w, half_h = size[..., :1] / 2, size[..., 1:] / 2
    extent = torch.cat((half_w * cos + half_h * sin, half_w * sin + half_h * cos), -1)
    return torch.cat((centre - extent, centre + extent), -1)


@dataclass(frozen=True)
class HeadSpec:
    """What a distillation method may know about a head, read once by its adapter when the run is built.

    Plain data: methods that run a model's own head layers (CrossKD runs the teacher's tail) get that model's head
    adapter from ``DistillLoss.from_heads``, never through the spec.

    Attributes:
        family: human-readable head family, e.g. ``"YOLOv8 (legacy head)"``.
        num_classes: C.
        strides: pixels per grid unit of each level, P3 first.
        reg_max: R (16 = DFL, 1 = direct ltrb).
        branches: ``("one2many",)`` or ``("one2many", "one2one")``.
        feat_channels: D of each level's neck feature (head input).
        stage_channels: per part (``box``, ``cls``) the output width of its stages (same at every level).
        num_stages: stages before the predictor in each tower (``View.stages[part]`` has this many entries).
        task: Ultralytics' task of the model (``detect``, ``segment``, ``pose``, ``obb``); teacher and student
            must share it.
        keypoint_shape: pose heads only, else None: (K, 2 or 3), keypoints and values per keypoint (x, y[, v]).
        anchors_per_cell: k, predictions per cell (1 for anchor-free heads, 9 for RetinaNet).
        anchor_shapes: anchor-based heads only, else empty: (w, h) of each of a cell's k anchor boxes, in strides
            (the same at every level), in the order of the layout.
        centerness: True when the head predicts a centerness logit per anchor (FCOS): its views fill
            ``View.centerness`` and its adapter's ``run_tail_outputs`` returns it from the box tower's tail.
    """

    family: str
    num_classes: int
    strides: tuple[float, ...]
    reg_max: int
    branches: tuple[str, ...]
    feat_channels: tuple[int, ...]
    stage_channels: dict[str, int]
    num_stages: int
    task: str = "detect"
    keypoint_shape: tuple[int, int] | None = None
    anchors_per_cell: int = 1
    anchor_shapes: tuple[tuple[float, float], ...] = ()
    centerness: bool = False

    @property
    def num_levels(self) -> int:
        """L."""
        return len(self.strides)


def same_anchor_layout(teacher: HeadSpec, student: HeadSpec) -> bool:
    """True when anchor i of the teacher and of the student is the same prior (same k and anchor boxes), so their
    predictions can be matched anchor by anchor; otherwise only cell by cell."""
    return (teacher.anchors_per_cell, teacher.anchor_shapes) == (student.anchors_per_cell, student.anchor_shapes)
