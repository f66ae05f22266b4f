"""Head adapter for Ultralytics' ``OBB`` heads (YOLOv8-obb, YOLO11-obb; ``OBB26``: YOLO26-obb): a Detect head whose box
branch predicts ltrb distances in each box's own rotated frame, plus an angle branch (``cv4``, one angle per anchor).

The towers (``cv2``/``cv3``), their stages and CrossKD's tail are the Detect family's. What differs is decoding: a
box is ``dist2rbox(ltrb, angle, anchor)``, a rotated xywhr box; views carry it as ``rboxes`` with the angles, and
``boxes`` is the axis-aligned box enclosing it, so methods that only place boxes on the grid (FGD's masks, G-DetKD's
RoIs) run unchanged, and IoU-based methods use ProbIoU on ``rboxes`` (see each loss's docstring). ``OBB26`` outputs the
raw angle (no sigmoid squashing into [-pi/4, 3pi/4)) and regresses ltrb directly (reg_max=1, no DFL); Ultralytics
decodes it with the same ``dist2rbox`` and trains it with the same ``v8OBBLoss``, so it is read the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor
from ultralytics.nn.modules.head import OBB, OBB26
from ultralytics.utils.tal import dist2rbox, make_anchors

from yolokd.heads.base import RawOutputs
from yolokd.heads.detect import DetectHeadAdapter
from yolokd.views import View, enclosing_boxes


class OBBHeadAdapter(DetectHeadAdapter):
    """Reads views (rotated boxes, angles, and the Detect outputs) out of one model's OBB head."""

    head_types = (OBB, OBB26)
    task = "obb"
    models = "YOLOv8-obb, YOLO11-obb, YOLO26-obb"

    def build_view(self, raw: RawOutputs, stages: dict[str, list[list[Tensor]]] | None = None) -> View:
        """``boxes`` (B, 4R, A), ``scores`` (B, C, A), ``angle`` (B, 1, A) radians, ``feats`` -> a View with rboxes."""
        feats = raw["feats"]
        anchors, strides = make_anchors(feats, self.head.stride, 0.5)  # (A, 2) grid units, (A, 1)
        box_output = raw["boxes"].permute(0, 2, 1)  # (B, A, 4R)
        angles = raw["angle"].permute(0, 2, 1)  # (B, A, 1)
        rboxes = self.decode_rotated(box_output, angles, anchors)
        rboxes = torch.cat((rboxes[..., :4] * strides, rboxes[..., 4:]), -1)  # pixels
        return View(
            feats=list(feats),
            cls_logits=raw["scores"].permute(0, 2, 1),
            box_output=box_output,
            boxes=enclosing_boxes(rboxes),
            anchors=anchors,
            strides=strides,
            reg_max=self.spec.reg_max,
            stages=stages or {},
            angles=angles,
            rboxes=rboxes,
        )

    def decode_rotated(self, box_output: Tensor, angles: Tensor, anchors: Tensor) -> Tensor:
        """(B, A, 4R) raw box output + (B, A, 1) angles + (A, 2) anchors -> (B, A, 5) xywhr, grid units / radians.

        The ltrb distances (DFL expectation for R > 1, as in ``decode``) are in the box's rotated frame; the decoding
        is Ultralytics' ``v8OBBLoss.bbox_decode``.
        """
        distances = box_output.clamp(min=0)
        if self.spec.reg_max > 1:
            b, a, _ = box_output.shape
            proj = self._proj.to(box_output.device, box_output.dtype)
            distances = box_output.view(b, a, 4, self.spec.reg_max).softmax(3).matmul(proj)
        return torch.cat((dist2rbox(distances, angles, anchors), angles), -1)

    def decode(self, box_output: Tensor, anchors: Tensor) -> Tensor:
        """Refused: an OBB box needs its angle (``decode_rotated``); an axis-aligned decoding would drop it."""
        raise TypeError("OBB boxes need their angle: use OBBHeadAdapter.decode_rotated(box_output, angles, anchors)")

    def decode_in_box_frame(self, box_output: Tensor, anchors: Tensor) -> Tensor:
        """(B, A, 4R) raw box output + (A, 2) anchors -> (B, A, 4) xyxy boxes in each box's own rotated frame.

        The ltrb distances decoded around the anchor without turning them by the angle: the rotated box as seen in
        its own frame, up to a rotation about the anchor. Two boxes of one anchor in the same frame (a cross-head box
        and the teacher's, both in the teacher's angle) compare by any rotation-invariant measure, e.g. GIoU.
        """
        return super().decode(box_output, anchors)
