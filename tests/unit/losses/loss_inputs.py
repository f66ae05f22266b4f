"""Hand-made Views, Targets and HeadSpecs for the feature-loss unit tests (imported by them, not a test)."""

from __future__ import annotations

import torch

from yolokd.views import HeadSpec, Targets, View


def feature_spec(*channels: int) -> HeadSpec:
    """A YOLOv8-like head spec with one level per entry of ``channels`` (neck widths D_l)."""
    strides = tuple(8.0 * 2**level for level in range(len(channels)))
    return HeadSpec("test head", 3, strides, 16, ("one2many",), tuple(channels), {"box": 16, "cls": 16}, 2)


def feature_view(*feats: torch.Tensor) -> View:
    """A View whose neck features are ``feats`` (B, D_l, H_l, W_l); head outputs are zeros of matching size."""
    batch = feats[0].shape[0]
    anchors = sum(f.shape[2] * f.shape[3] for f in feats)
    return View(
        feats=list(feats),
        cls_logits=torch.zeros(batch, anchors, 3),
        box_output=torch.zeros(batch, anchors, 64),
        boxes=torch.zeros(batch, anchors, 4),
        anchors=torch.zeros(anchors, 2),
        strides=torch.ones(anchors, 1),
        reg_max=16,
    )


def targets_for(fg_mask: torch.Tensor) -> Targets:
    """Targets with the given (B, A) positive-anchor mask and no GT boxes (prediction losses read only N_pos)."""
    batch, anchors = fg_mask.shape
    return Targets(
        fg_mask=fg_mask,
        gt_index=torch.zeros(batch, anchors, dtype=torch.long),
        target_boxes=torch.zeros(batch, anchors, 4),
        gt_boxes=torch.zeros(batch, 0, 4),
        gt_labels=torch.zeros(batch, 0, dtype=torch.long),
        gt_mask=torch.zeros(batch, 0, dtype=torch.bool),
        image_size=torch.tensor([64.0, 64.0]),
    )


def empty_targets(batch: int) -> Targets:
    """Targets without any GT box or positive anchor (feature losses do not read them)."""
    return targets_for(torch.zeros(batch, 1, dtype=torch.bool))


def run_loss(loss: torch.nn.Module, student_feats: list, teacher_feats: list) -> dict[str, torch.Tensor]:
    """Call a feature loss on per-level student and teacher features."""
    return loss(feature_view(*student_feats), feature_view(*teacher_feats), empty_targets(student_feats[0].shape[0]))
