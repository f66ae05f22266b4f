"""Head adapter for Ultralytics' ``Segment`` heads (YOLOv8-seg, YOLO11-seg; ``Segment26``: YOLO26-seg): a Detect head
plus mask coefficients (``cv4``, K per anchor) and a prototype branch (``proto``, K maps at 1/4 of the input size).

The detection part (``cv2``/``cv3``, stages, decoding, CrossKD's tail) is the Detect family's, unchanged: every
detection method runs on it as on a detect model. The views also carry the mask coefficients and prototypes, which
mask KD (``yolokd.losses.maskkd``) assembles into per-anchor masks. ``Segment26`` differs only where yolokd does not
look: its ``Proto26`` fuses all levels and, in training, returns ``(prototypes, semantic logits)`` (the prototypes are
read, the semantic branch is not distilled), and its loss (``SegmentLoss26``) scores the predicted masks in the
assignment, which the criterion captures as it does any assigner's.
"""

from __future__ import annotations

from torch import Tensor
from ultralytics.nn.modules.head import Segment, Segment26

from yolokd.heads.base import RawOutputs
from yolokd.heads.detect import DetectHeadAdapter
from yolokd.views import View


class SegmentHeadAdapter(DetectHeadAdapter):
    """Reads views (detection part + mask coefficients and prototypes) out of one model's Segment head."""

    head_types = (Segment, Segment26)
    task = "segment"
    models = "YOLOv8-seg, YOLO11-seg, YOLO26-seg"

    def build_view(self, raw: RawOutputs, stages: dict[str, list[list[Tensor]]] | None = None) -> View:
        """The Detect view of ``raw`` + ``mask_coefficient`` (B, K, A) as (B, A, K) and ``proto`` (B, K, H_m, W_m) (the
        first of ``Proto26``'s training pair)."""
        view = super().build_view(raw, stages)
        prototypes = raw["proto"]
        view.prototypes = prototypes[0] if isinstance(prototypes, tuple) else prototypes
        view.mask_coefficients = raw["mask_coefficient"].permute(0, 2, 1)
        return view
