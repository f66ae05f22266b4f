"""Head adapter for the Ultralytics ``Detect`` family: YOLOv8 (legacy cls branch), YOLO11 (DWConv cls branch),
YOLOv10 and YOLO26 (one2many + one2one branches; YOLO26 regresses ltrb directly, ``reg_max=1``).

It translates Ultralytics internals (``cv2``/``cv3``, ``one2one_*``, ``nl``, ``reg_max``, the raw prediction
dicts) into yolokd's vocabulary once: branches (``one2many``/``one2one``), parts (``box``/``cls``), stages, and
:class:`~yolokd.views.View`. Nothing else in yolokd touches those names.

Only the exact classes ``Detect`` and ``v10Detect``: Ultralytics' task heads (``Segment``, ``Pose``, ``OBB`` and
their ``*26`` versions) subclass ``Detect`` but add task outputs, losses and, for OBB, rotated boxes; each gets its
own adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from ultralytics.nn.modules.conv import Conv
from ultralytics.nn.modules.head import Detect, v10Detect
from ultralytics.utils.tal import dist2bbox, make_anchors

from yolokd.heads.base import HeadAdapter, RawOutputs
from yolokd.views import PREACTIVATION, HeadSpec, View

NUM_HEAD_STAGES = 2  # Conv stages before the 1x1 predictor in every branch of the Detect family


def _family(head: Detect) -> str:
    dual = getattr(head, "one2one_cv2", None) is not None
    if head.reg_max == 1:
        return "YOLO26 (one2one + one2many, reg_max=1)" if dual else "direct-regression Detect head (reg_max=1)"
    if dual:
        return "YOLOv10-style (one2one + one2many, DFL)"
    return "YOLOv8 (legacy head)" if head.legacy else "YOLO11 (DWConv cls branch)"


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class DetectHeadAdapter(HeadAdapter):
    """Reads views out of one model's Detect head; one adapter per model instance (teacher, student, EMA)."""

    head_types = (Detect, v10Detect)
    task = "detect"
    models = "YOLOv8, YOLO11, YOLOv10, YOLO26"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self._proj = torch.arange(self.head.reg_max, dtype=torch.float32)

    def read_spec(self) -> HeadSpec:
        """Family, classes, strides, reg_max, branches and widths of this Detect head."""
        head = self.head
        return HeadSpec(
            family=_family(head),
            num_classes=int(head.nc),
            strides=tuple(float(s) for s in head.stride),
            reg_max=int(head.reg_max),
            branches=("one2many", "one2one") if getattr(head, "one2one_cv2", None) is not None else ("one2many",),
            feat_channels=tuple(_in_channels(seq) for seq in head.cv2),
            stage_channels={"box": _out_channels(head.cv2[0][0]), "cls": _out_channels(head.cv3[0][0])},
            num_stages=NUM_HEAD_STAGES,
            task=self.task,
        )

    def branch_modules(self, branch: str, part: str) -> nn.ModuleList:
        """The per-level ``nn.Sequential`` towers of one branch part (``box`` or ``cls``)."""
        prefix = "one2one_" if branch == "one2one" else ""
        return getattr(self.head, prefix + ("cv2" if part == "box" else "cv3"))

    def stage_module(self, branch: str, part: str, level: int, stage: int) -> nn.Module:
        """The module whose output is the recorded point of one stage.

        ``part`` is ``box``/``cls`` for the stage output (post-activation) or ``box_preact``/``cls_preact`` for its
        pre-activation (the BatchNorm output of the Conv that ends the stage; for YOLO11/26 cls stages, which are
        DWConv -> Conv1x1, that of the 1x1 Conv).
        """
        base_part = part.removesuffix(PREACTIVATION)
        tower = self.branch_modules(branch, base_part)[level]
        return _ending_conv(tower[stage]).bn if part.endswith(PREACTIVATION) else tower[stage]

    def stage_modules(self, branch: str, part: str, stage: int) -> list[nn.Module]:
        """One stage's recorded module at every level (a Detect head has a tower per level)."""
        return [self.stage_module(branch, part, level, stage) for level in range(self.spec.num_levels)]

    def run_tail(
        self, branch: str, part: str, level: int, stage: int, x: Tensor, preactivation: bool = False
    ) -> Tensor:
        """Run one level's tower of this head from ``stage`` to its 1x1 predictor on a foreign input ``x``.

        CrossKD's cross-head pass: ``x`` comes from another model (the student), so it keeps its graph and the
        result is differentiable with respect to ``x``; this model's parameters are used as they are (frozen for a
        teacher, so they never receive ``.grad``). Never call it under ``no_grad`` if ``x`` needs a gradient.
        The pass runs in this model's parameter dtype (fp16 for a half-precision teacher on CUDA + AMP, whatever
        autocast says) and returns in ``x``'s dtype. Run it outside a recording of this model (the teacher's recording
        ends with its forward), or the tail's stages are recorded as well.

        Args:
            branch: ``one2many`` or ``one2one``.
            part: ``box`` or ``cls``.
            level: pyramid level index (0 = P3).
            stage: first stage to run: 0 = the whole tower (``x`` is a neck feature), 1, or ``NUM_HEAD_STAGES`` =
                the predictor only.
            x: (B, D, H_l, W_l) input of ``stage``; with ``preactivation`` it is instead the pre-activation (BN
                output) of stage ``stage - 1``, and that stage's activation is applied first.
            preactivation: see ``x``; needs ``stage >= 1``.

        Returns:
            (B, 4R, H_l, W_l) box output (DFL bin logits, or ltrb for R == 1) or (B, C, H_l, W_l) class logits.
        """
        if not 0 <= stage <= NUM_HEAD_STAGES:
            raise ValueError(f"stage={stage} is out of range: a tower has stages 0..{NUM_HEAD_STAGES}")
        if preactivation and stage == 0:
            raise ValueError("preactivation=True needs stage >= 1 (it is the BN output of stage - 1)")
        tower = self.branch_modules(branch, part.removesuffix(PREACTIVATION))[level]
        out = x.to(next(tower.parameters()).dtype)
        with torch.autocast(x.device.type, enabled=False):
            if preactivation:
                out = _ending_conv(tower[stage - 1]).act(out)
            for module in tower[stage:]:
                out = module(out)
        return out.to(x.dtype)

    def split_branches(self, preds: dict | tuple) -> dict[str, RawOutputs]:
        """Raw head outputs per branch, from a training-mode dict or an eval-mode ``(decoded, raw)`` tuple."""
        raw = preds[1] if isinstance(preds, tuple) else preds
        return {"one2many": raw["one2many"], "one2one": raw["one2one"]} if "one2one" in raw else {"one2many": raw}

    def build_view(self, raw: RawOutputs, stages: dict[str, list[list[Tensor]]] | None = None) -> View:
        """Turn one branch's raw outputs (``boxes`` (B, 4R, A), ``scores`` (B, C, A), ``feats``) into a View (k anchors
        per cell as ``spec.anchors_per_cell`` says; 1 for every Detect head)."""
        feats = raw["feats"]
        anchors, strides = make_anchors(feats, self.head.stride, 0.5)  # (A, 2) grid units, (A, 1)
        per_cell = self.spec.anchors_per_cell
        if per_cell > 1:  # anchor-based heads: each cell's k anchors share its centre (the views' layout)
            anchors, strides = anchors.repeat_interleave(per_cell, 0), strides.repeat_interleave(per_cell, 0)
        box_output = raw["boxes"].permute(0, 2, 1)  # (B, A, 4R)
        return View(
            feats=list(feats),
            cls_logits=raw["scores"].permute(0, 2, 1),
            box_output=box_output,
            boxes=self.decode(box_output, anchors) * strides,
            anchors=anchors,
            strides=strides,
            reg_max=self.spec.reg_max,
            anchors_per_cell=per_cell,
            stages=stages or {},
        )

    def decode(self, box_output: Tensor, anchors: Tensor) -> Tensor:
        """(B, A, 4R) raw box output + (A, 2) anchors -> (B, A, 4) xyxy boxes in grid units.

        DFL heads decode each side as the expectation over its R bins (always >= 0); reg_max=1 heads output ltrb
        directly, and those are clamped at 0: a negative side decodes a flipped box, for which IoU/GIoU-based KD terms
        are undefined and can fall without bound (a side gets no KD gradient while it is negative).
        """
        distances = box_output.clamp(min=0)
        if self.spec.reg_max > 1:
            b, a, _ = box_output.shape
            proj = self._proj.to(box_output.device, box_output.dtype)
            distances = box_output.view(b, a, 4, self.spec.reg_max).softmax(3).matmul(proj)
        return dist2bbox(distances, anchors, xywh=False)

    @contextmanager
    def raw_outputs(self) -> Iterator[None]:
        """Make an eval-mode model return the raw prediction dict only, skipping box decoding and top-k.

        Only the Detect module's own flag changes; its BatchNorm layers stay in eval mode.
        """
        was_training = self.head.training
        self.head.training = True
        try:
            yield
        finally:
            self.head.training = was_training


def _ending_conv(stage: nn.Module) -> Conv:
    """The Conv (conv -> BN -> act) that ends a head stage: the stage itself, or the 1x1 Conv after a DWConv."""
    conv = [m for m in stage.modules() if isinstance(m, Conv)][-1]
    if not isinstance(getattr(conv, "bn", None), nn.BatchNorm2d):
        raise ValueError(
            "this head's Conv layers are fused (BatchNorm folded into the conv): the pre-activation point and the "
            "activation CrossKD needs are gone. Load the model from its training checkpoint without fuse()"
        )
    return conv


def _in_channels(tower: nn.Sequential) -> int:
    first_conv = next(m for m in tower.modules() if isinstance(m, nn.Conv2d))
    return first_conv.in_channels
