"""Head adapter for Ultralytics' ``Pose`` heads (YOLOv8-pose, YOLO11-pose; ``Pose26``: YOLO26-pose): a Detect head
plus a keypoint tower (``cv4``: K x (x, y[, visibility]) per anchor).

The detection part (towers, stages, decoding, CrossKD's tail) is the Detect family's, unchanged. Views also carry the
decoded keypoints in pixels and the visibility logits, which keypoint KD (``yolokd.losses.kptkd``) reads. Decoding is
Ultralytics' ``kpts_decode`` of each head: ``(2 · raw + anchor - 0.5) · stride`` for ``Pose``, ``(raw + anchor) ·
stride`` for ``Pose26``. ``Pose26``'s training-only outputs (per-keypoint sigmas for its RLE loss, the flow model) are
not distilled.
"""

from __future__ import annotations

from torch import Tensor
from ultralytics.nn.modules.head import Pose, Pose26

from yolokd.heads.base import RawOutputs
from yolokd.heads.detect import DetectHeadAdapter
from yolokd.views import HeadSpec, View


class PoseHeadAdapter(DetectHeadAdapter):
    """Reads views (detection part + keypoints and their visibility) out of one model's Pose head."""

    head_types = (Pose, Pose26)
    task = "pose"
    models = "YOLOv8-pose, YOLO11-pose, YOLO26-pose"

    def read_spec(self) -> HeadSpec:
        """The Detect spec plus the keypoint shape (K, 2 or 3)."""
        spec = super().read_spec()
        return HeadSpec(**{**spec.__dict__, "keypoint_shape": tuple(int(v) for v in self.head.kpt_shape)})

    def build_view(self, raw: RawOutputs, stages: dict[str, list[list[Tensor]]] | None = None) -> View:
        """The Detect view of ``raw`` plus ``kpts`` (B, K·ndim, A) decoded to (B, A, K, 2) pixels and (B, A, K)
        visibility logits (None when the keypoints have no visibility channel)."""
        view = super().build_view(raw, stages)
        count, ndim = self.spec.keypoint_shape
        batch = raw["kpts"].shape[0]
        kpts = raw["kpts"].permute(0, 2, 1).reshape(batch, -1, count, ndim)  # (B, A, K, ndim)
        if isinstance(self.head, Pose26):  # Pose26.kpts_decode: offset from the anchor, grid units
            grid = kpts[..., :2] + view.anchors[None, :, None, :]
        else:  # Pose.kpts_decode
            grid = kpts[..., :2] * 2.0 + (view.anchors - 0.5)[None, :, None, :]
        view.keypoints = grid * view.strides[None, :, None, :]
        view.keypoint_visibility = kpts[..., 2] if ndim == 3 else None
        return view
