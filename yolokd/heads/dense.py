"""Head adapters for yolokd's dense heads with towers shared across levels (``GFLDetect``, ``FCOSDetect``,
``RetinaNetDetect``).

Such a head has one cls tower and one box tower (``ConvNormAct`` stages: 3x3 conv -> GroupNorm -> ReLU) that every level
runs through in turn, then a 3x3 predictor per branch and a learnable scale per level on the box output. Its raw outputs
have the Detect layout (``boxes`` (B, 4R, A), ``scores`` (B, C, A), ``feats``), so views are built and boxes decoded as
for a Detect head (DFL expectation for R > 1, ltrb for FCOS's R = 1); what differs is where the stages are: one shared
module per stage, called once per level (the recorder stores its outputs per level, in call order), and the tail that
CrossKD runs is the shared tower from a stage on, the predictor and that level's scale.

FCOS's centerness: its views carry the centerness logits (``View.centerness``, ``HeadSpec.centerness``) and
``run_tail_outputs`` of the box tower returns the centerness the head computes from the tail's box-tower output (its
``centerness_on_reg``), so a method reads them here, never in the module. Which methods distil it: see the README
(CrossKD only, off by default as in its FCOS config; ``ctr_weight``).

RetinaNet is the same shape with k = 9 anchors per cell (its spec says how many and their boxes; its views hold A =
Σ H W k anchors, a cell's k in a row) and towers without normalisation (a stage's pre-activation is its conv output,
recorded at the stage's ``norm``, an identity); only decoding differs: deltas to the anchor boxes
(:class:`RetinaNetHeadAdapter`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yolokd.heads.base import RawOutputs
from yolokd.heads.detect import DetectHeadAdapter
from yolokd.models.anchors import anchor_boxes, decode_deltas
from yolokd.models.dense_head import SharedTowerDetect
from yolokd.models.fcos import FCOSDetect
from yolokd.models.gfl import GFLDetect
from yolokd.models.retinanet import RetinaNetDetect
from yolokd.views import PREACTIVATION, HeadSpec, View


class SharedTowerHeadAdapter(DetectHeadAdapter):
    """Reads views out of one model's shared-tower dense head (GFL, FCOS); one adapter per model instance."""

    head_types = (GFLDetect, FCOSDetect)
    task = "detect"
    models = "yolokd GFL and FCOS"

    def read_spec(self) -> HeadSpec:
        """Family, classes, strides, reg_max and widths; every stage and level of a tower has the head's width."""
        head: SharedTowerDetect = self.head
        width = head.cls_pred.in_channels
        norm = "GN " if isinstance(head.cls_tower[0].norm, nn.GroupNorm) else ""
        per_cell = int(head.anchors_per_cell)
        anchors = f", {per_cell} anchors per cell" if per_cell > 1 else ""
        return HeadSpec(
            family=f"{head.family} (shared {norm}towers, {head.stacked_convs} stages{anchors})",
            num_classes=int(head.nc),
            strides=tuple(float(s) for s in head.stride),
            reg_max=int(head.reg_max),
            branches=("one2many",),
            feat_channels=(head.cls_tower[0].conv.in_channels,) * int(head.nl),
            stage_channels={"box": width, "cls": width},
            num_stages=int(head.stacked_convs),
            task=self.task,
            anchors_per_cell=per_cell,
            anchor_shapes=tuple(getattr(head, "anchor_shapes", ())),
            centerness=self.has_centerness,
        )

    @property
    def has_centerness(self) -> bool:
        """True for heads with a centerness predictor on the box tower (FCOS)."""
        return isinstance(getattr(self.head, "centerness_pred", None), nn.Module)

    def build_view(self, raw: RawOutputs, stages: dict[str, list[list[Tensor]]] | None = None) -> View:
        """As :meth:`DetectHeadAdapter.build_view`; FCOS views also carry the (B, A) centerness logits."""
        view = super().build_view(raw, stages)
        if self.has_centerness:
            view.centerness = raw["centerness"].flatten(1)  # (B, k, A) with k = 1 -> (B, A)
        return view

    def tower(self, part: str) -> nn.Sequential:
        """The shared tower of ``box`` or ``cls`` (``*_preact`` names the same tower)."""
        return self.head.box_tower if part.removesuffix(PREACTIVATION) == "box" else self.head.cls_tower

    def stage_modules(self, branch: str, part: str, stage: int) -> list[nn.Module]:
        """One shared module per stage: the stage (output after ReLU) or its GroupNorm (``*_preact``)."""
        block = self.tower(part)[stage]
        return [block.norm if part.endswith(PREACTIVATION) else block]

    def run_tail(
        self, branch: str, part: str, level: int, stage: int, x: Tensor, preactivation: bool = False
    ) -> Tensor:
        """Run the shared tower of ``part`` from ``stage`` on, then its predictor (box: the head's box output of level
        ``level``, with its scale if it has one) on ``x``.

        As :meth:`DetectHeadAdapter.run_tail`: differentiable with respect to ``x``, in this model's parameter dtype
        with autocast off, returned in ``x``'s dtype; ``stage`` 0 = the whole tower on a neck feature,
        ``stacked_convs`` = the predictor only; with ``preactivation`` ``x`` is the GroupNorm output of stage
        ``stage - 1`` and its ReLU is applied first.

        Returns:
            (B, k*4R, H_l, W_l) box output (scaled as the head scales it) or (B, k*C, H_l, W_l) class logits, the
            predictor's channels (``yolokd.views.flatten_anchors`` puts them in the views' anchor layout).
        """
        return self._tail_outputs(part, level, stage, x, preactivation, extras=False)[part.removesuffix(PREACTIVATION)]

    def run_tail_outputs(
        self, branch: str, part: str, level: int, stage: int, x: Tensor, preactivation: bool = False
    ) -> dict[str, Tensor]:
        """As :meth:`run_tail`, by name; for FCOS's box tower also ``"centerness"``: (B, 1, H_l, W_l) logits of the
        head's centerness predictor on the same tail output (``centerness_on_reg``), differentiable in ``x`` alike."""
        return self._tail_outputs(part, level, stage, x, preactivation, extras=True)

    def _tail_outputs(
        self, part: str, level: int, stage: int, x: Tensor, preactivation: bool, extras: bool
    ) -> dict[str, Tensor]:
        stages = self.spec.num_stages
        if not 0 <= stage <= stages:
            raise ValueError(f"stage={stage} is out of range: this tower has stages 0..{stages}")
        if preactivation and stage == 0:
            raise ValueError("preactivation=True needs stage >= 1 (it is the GroupNorm output of stage - 1)")
        tower = self.tower(part)
        base_part = part.removesuffix(PREACTIVATION)
        out = x.to(next(tower.parameters()).dtype)
        with torch.autocast(x.device.type, enabled=False):
            if preactivation:
                out = tower[stage - 1].act(out)
            out = tower[stage:](out)
            if base_part == "cls":
                return {"cls": self.head.cls_pred(out).to(x.dtype)}
            outputs = {"box": self.head.box_output(level, out)}
            if extras and self.has_centerness:
                outputs["centerness"] = self.head.centerness_pred(out)
        return {name: value.to(x.dtype) for name, value in outputs.items()}


class RetinaNetHeadAdapter(SharedTowerHeadAdapter):
    """Reads views out of one model's RetinaNet head: the shared-tower adapter with delta decoding."""

    head_types = (RetinaNetDetect,)
    models = "yolokd RetinaNet"

    def decode(self, box_output: Tensor, anchors: Tensor) -> Tensor:
        """(B, A, 4) deltas + (A, 2) anchor centres (each cell's k in a row) -> (B, A, 4) xyxy boxes in grid units.

        The anchor boxes are the centres with each cell's k anchor shapes (in strides, so the same in grid units at
        every level); a delta box in grid units times its stride is the head's own decoded box in pixels.
        """
        shapes = self.head.anchor_wh.to(anchors)
        return decode_deltas(box_output, anchor_boxes(anchors, shapes))
