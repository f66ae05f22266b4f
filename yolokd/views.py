"""The data types every loss reads: what one forward recorded for one model (:class:`View`), the student's label
assignment (:class:`Targets`) and what a method may know about a head (:class:`HeadSpec`).

A leaf: this module imports nothing of yolokd, so losses, head adapters, the engine and the config all import it
without importing each other. Nothing here holds a model or a module: head adapters (``yolokd.heads``) fill these
types in, losses read them.

Shape alphabet (used everywhere in yolokd): B batch, L levels, A anchors over all levels, C classes,
R reg_max (DFL bins per side; 1 for direct-regression heads such as YOLO26), M GT boxes per image (padded),
D channels.
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
        box_output: (B, A, 4*R) raw box output: DFL bin logits for R > 1, ltrb distances in grid units for R == 1.
        boxes: (B, A, 4) decoded boxes, xyxy, pixels (OBB heads: the axis-aligned box enclosing ``rboxes``).
        anchors: (A, 2) anchor centres, grid units of their own level (cell centre = index + 0.5).
        strides: (A, 1) stride of each anchor's level, pixels per grid unit.
        reg_max: R.
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
    """

    feats: list[Tensor]
    cls_logits: Tensor
    box_output: Tensor
    boxes: Tensor
    anchors: Tensor
    strides: Tensor
    reg_max: int
    stages: dict[str, list[list[Tensor]]] = field(default_factory=dict)
    mask_coefficients: Tensor | None = None
    prototypes: Tensor | None = None
    angles: Tensor | None = None
    rboxes: Tensor | None = None
    keypoints: Tensor | None = None
    keypoint_visibility: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """B."""
        return self.cls_logits.shape[0]

    @property
    def level_sizes(self) -> list[int]:
        """Anchors per level (H_l * W_l), in the order of ``feats``."""
        return [f.shape[2] * f.shape[3] for f in self.feats]

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

    @property
    def num_levels(self) -> int:
        """L."""
        return len(self.strides)
