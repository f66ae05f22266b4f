"""The Ultralytics face of a dense head with shared towers (GFL, FCOS, RetinaNet): a ``Detect`` subclass.

Subclassing Ultralytics' ``Detect`` is what makes such a head "a YOLO" to the rest of Ultralytics: the model builder
measures its strides, the exporter sets its ``export``/``format``/``dynamic`` flags, ``guess_model_task`` reads it as
a detection head, and the eval-mode forward returns what the validator's NMS and the exporter expect:
``(B, 4 + C, A)`` with decoded xywh boxes in pixels and sigmoid class scores (alone in export mode, else with the
raw outputs). Only the towers and how boxes are decoded differ from a YOLO head; the raw training outputs keep
Ultralytics' dict layout (``boxes`` (B, 4R, A), ``scores`` (B, C, A), ``feats``), so a family's loss reads them the way
``v8DetectionLoss`` does.

Towers: ``cls_tower`` and ``box_tower`` (``ConvNormAct`` stages, shared by every level, run level by level: GroupNorm
statistics stay per level as in mmdetection), then ``cls_pred``/``box_pred`` 3x3 predictors and a learnable
``Scale`` per level on the box output. Anchor-based heads (RetinaNet) predict k anchors per cell: the predictors give
k*C and k*4R channels, flattened into A in the layout of ``yolokd.views`` (a cell's k anchors contiguous).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from ultralytics.nn.modules.block import DFL
from ultralytics.nn.modules.head import Detect

from yolokd.models.blocks import Scale, predictor, prior_bias, tower
from yolokd.views import flatten_anchors


class SharedTowerDetect(Detect):
    """Base of the dense heads whose towers are shared across levels.

    Args:
        nc: C, number of classes.
        stacked_convs: stages in each tower (mmdetection: 4).
        reg_max: R, bins per box side of a general distribution (R > 1, Ultralytics' DFL convention: bins 0..R-1), or 1
            for heads that regress ltrb distances (FCOS) or anchor deltas (RetinaNet) directly.
        ch: channels of each input level; all equal (one tower serves every level), e.g. an FPN's outputs.
        anchors_per_cell: k, predictions per cell (anchor-based heads; 1 for anchor-free ones).
        tower_norm: GroupNorm in the tower stages (mmdetection's GFL/FCOS) or none (its RetinaNet).
        level_scales: a learnable ``Scale`` per level on the box output (GFL/FCOS) or none (RetinaNet).

    Attributes:
        family: human-readable name, for messages and HeadSpec.
    """

    family: ClassVar[str] = ""
    # Detect's per-level towers. A dense head has none; Ultralytics' generic model code (is_fused, load) reads
    # ``cv2`` and ``cv3``, and handles an empty ``cv2`` and a missing ``cv3`` as "nothing to transfer".
    cv2: ClassVar[tuple] = ()
    cv3: ClassVar[None] = None

    def __init__(
        self,
        nc: int = 80,
        stacked_convs: int = 4,
        reg_max: int = 16,
        ch: tuple[int, ...] = (),
        *,
        anchors_per_cell: int = 1,
        tower_norm: bool = True,
        level_scales: bool = True,
    ) -> None:
        nn.Module.__init__(self)  # not Detect.__init__: it builds YOLO's per-level towers
        if not ch or len(set(ch)) != 1:
            raise ValueError(
                f"{type(self).__name__} shares one tower across levels, so every input level needs the same width; got "
                f"{list(ch)}. Give the neck a 1x1 Conv per level to one width (see yolokd/cfg/models/gfl-yolov8.yaml)"
            )
        if stacked_convs < 1 or reg_max < 1:
            raise ValueError(
                f"{type(self).__name__} needs stacked_convs >= 1 and reg_max >= 1, got {stacked_convs} and {reg_max}"
            )
        width = ch[0]
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = reg_max
        self.no = nc + 4 * reg_max
        self.stacked_convs = stacked_convs
        self.anchors_per_cell = anchors_per_cell
        self.stride = torch.zeros(self.nl)  # measured by the model builder
        self.cls_tower = tower(width, stacked_convs, tower_norm)
        self.box_tower = tower(width, stacked_convs, tower_norm)
        self.cls_pred = predictor(width, anchors_per_cell * nc, bias=prior_bias(0.01))
        self.box_pred = predictor(width, anchors_per_cell * 4 * reg_max)
        self.scales = nn.ModuleList(Scale(1.0) for _ in ch) if level_scales else nn.ModuleList()
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()

    @property
    def one2many(self) -> dict:
        """Detect's per-level head modules: none here (the towers are shared)."""
        return {}

    def forward_head(self, x: list[Tensor], box_head: nn.Module | None = None, cls_head: nn.Module | None = None):
        """L tensors (B, D, H_l, W_l) -> ``{"boxes": (B, 4R, A), "scores": (B, C, A), "feats": x}``, A = Σ_l H_l W_l k.

        Levels run one after the other through the shared towers (P3 first): a hook on a tower stage sees one call
        per level, in level order.
        """
        outputs: dict[str, list[Tensor]] = {"boxes": [], "scores": []}
        for level, feat in enumerate(x):
            cls_feat, box_feat = self.cls_tower(feat), self.box_tower(feat)
            level_outputs = {"scores": self.cls_pred(cls_feat), "boxes": self.box_output(level, box_feat)}
            level_outputs.update(self.extra_outputs(cls_feat, box_feat))
            for name, out in level_outputs.items():
                outputs.setdefault(name, []).append(flatten_anchors(out, self.anchors_per_cell))
        return {**{name: torch.cat(outs, -1) for name, outs in outputs.items()}, "feats": x}

    def box_output(self, level: int, box_feat: Tensor) -> Tensor:
        """(B, D, H, W) box-tower output of level ``level`` -> (B, k*4R, H, W) box output (bins, ltrb or deltas)."""
        out = self.box_pred(box_feat)
        return self.scales[level](out) if len(self.scales) else out

    def extra_outputs(self, cls_feat: Tensor, box_feat: Tensor) -> dict[str, Tensor]:
        """Family outputs of one level from the tower outputs, ``{name: (B, k*K, H, W)}`` (FCOS: centerness)."""
        return {}

    def forward(self, x: list[Tensor]) -> dict | Tensor | tuple[Tensor, dict]:
        """Training: the raw dict. Eval: ``(B, 4 + C, A)`` decoded xywh pixels + sigmoid scores (+ the raw dict)."""
        preds = self.forward_head(x)
        if self.training:
            return preds
        decoded = self._inference(preds)
        return decoded if self.export else (decoded, preds)

    def bias_init(self) -> None:
        """Biases are set when the predictors are built (class prior 0.01, as mmdetection); nothing to redo here."""

    def fuse(self) -> None:
        """Nothing to remove for inference (a dense head has one branch)."""

    def build_criterion(self, model: nn.Module) -> object:
        """The family's training loss for ``model`` (called by ``DenseDetectionModel.init_criterion``)."""
        raise NotImplementedError
