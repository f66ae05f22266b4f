"""Pieces several methods share: channel aligners (student width -> teacher width), attention maps, and the matching
of two heads' predictions when their anchors differ.

Prediction matching: methods that compare the two models' predictions anchor by anchor (BCKD, G-DetKD's prediction
KD) do so when both heads have the same anchor layout (same anchors per cell and the same anchor boxes:
``same_anchor_layout``). When they differ (a YOLO teacher, one prediction per cell, and a RetinaNet student, nine),
anchor i of one is not anchor i of the other, so the two are compared cell by cell: each model's prediction at a cell
is its most confident anchor there, class logits the largest over the cell's anchors per class, the box that of the
anchor with the highest top score (what NMS would keep of that cell). For a k = 1 head this is its own prediction.

Attention maps (Yang et al., FGD, CVPR 2022, https://arxiv.org/abs/2111.11837; the same forms are used by PGD and
DFD): a spatial map ``A^S = H W softmax_hw(mean_c |F| / T)`` (mean 1 over the cells of each image) and channel maps
``A^C = C softmax_c(|F| / T)``, either per pixel (PGD) or pooled over space (FGD). They are plain functions so
every method computes them the same way; callers decide whether to detach.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from yolokd.views import HeadSpec, View

LSTSQ_RIDGE = 1e-3  # ridge of the aligner fit, relative to the mean feature energy: keeps it well posed, no more


class ChannelAligner(nn.Module):
    """Per-level 1x1 convs mapping student feature widths onto the teacher's; identity where widths match.

    Train-only: aligners live in the loss module, are optimised by the KD optimiser and never exported.

    Args:
        student_channels: D_s of each level.
        teacher_channels: D_t of each level.
        identity_at_equal_widths: an identity where D_s == D_t (the papers' pairing); False puts a conv there too.
    """

    def __init__(
        self,
        student_channels: tuple[int, ...],
        teacher_channels: tuple[int, ...],
        identity_at_equal_widths: bool = True,
    ) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"student has {len(student_channels)} levels, teacher {len(teacher_channels)}")
        self.convs = nn.ModuleList(
            nn.Identity() if s == t and identity_at_equal_widths else nn.Conv2d(s, t, kernel_size=1)
            for s, t in zip(student_channels, teacher_channels, strict=True)
        )

    def forward(self, features: list[Tensor], teacher_features: list[Tensor] | None = None) -> list[Tensor]:
        """L tensors (B, D_s, H, W) -> L tensors (B, D_t, H, W); ``teacher_features`` is read by
        :class:`FittedAligner` only (one call for both kinds)."""
        return [conv(feature) for conv, feature in zip(self.convs, features, strict=True)]


class FittedAligner(ChannelAligner):
    """Per-level 1x1 convs from the student's widths to the teacher's (at every width, equal ones included), whose
    first call fits them by least squares: ``W = argmin Σ_cells ||t - W [s; 1]||² + λ ||W||²`` on that batch's
    features, detached, λ = :data:`LSTSQ_RIDGE` x the mean feature energy. Afterwards they are trained like any
    aligner.

    Why: channel i of a student trained on its own is not channel i of the teacher, so an identity (equal widths) or
    random 1x1 map hands the teacher's layers features in a foreign basis, and a KD loss read through them asks a
    pretrained student to rebuild its basis (``benchmarks/crosskd_basis.py``: on the evidence pair, the fitted map
    lowers CrossKD's initial box KL 4.5x against the identity; for a student at initialisation, 0.79 against 0.82).
    The fit is once per run: a ``fitted`` buffer, saved with the KD modules, survives resume; under DDP the normal
    equations are summed over ranks, so every rank fits the same map.
    """

    def __init__(self, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...]) -> None:
        super().__init__(student_channels, teacher_channels, identity_at_equal_widths=False)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self._fitted = False  # host-side copy of the buffer: no device sync per step

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._fitted = bool(self.fitted)  # resume, or the balance putting the modules back: follow the buffer

    @torch.no_grad()
    def fit(self, student_features: list[Tensor], teacher_features: list[Tensor]) -> None:
        """Least-squares weights and biases of every level's conv from (B, D_s, H, W) / (B, D_t, H, W) features.

        In fp32 with autocast off: the normal equations sum over every cell of the batch (fp16 would overflow).
        """
        device_type = student_features[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            self._solve(student_features, teacher_features)
        self.fitted.fill_(True)
        self._fitted = True

    def _solve(self, student_features: list[Tensor], teacher_features: list[Tensor]) -> None:
        for conv, student, teacher in zip(self.convs, student_features, teacher_features, strict=True):
            inputs = student.detach().float().permute(0, 2, 3, 1).reshape(-1, student.shape[1])
            inputs = torch.cat((inputs, inputs.new_ones(inputs.shape[0], 1)), 1)  # (N, D_s + 1), the bias column
            targets = teacher.detach().float().permute(0, 2, 3, 1).reshape(-1, teacher.shape[1])
            gram, cross = inputs.T @ inputs, inputs.T @ targets
            if torch.distributed.is_available() and torch.distributed.is_initialized():  # DDP: one fit
                torch.distributed.all_reduce(gram)
                torch.distributed.all_reduce(cross)
            ridge = LSTSQ_RIDGE * gram.diagonal().mean().clamp(min=torch.finfo(torch.float32).tiny)
            solution = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], device=gram.device), cross)
            conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape))
            conv.bias.copy_(solution[-1])

    def forward(self, features: list[Tensor], teacher_features: list[Tensor] | None = None) -> list[Tensor]:
        """L tensors (B, D_s, H, W) -> L tensors (B, D_t, H, W); the first call with ``teacher_features`` fits."""
        if not self._fitted and teacher_features is not None:
            self.fit(features, teacher_features)
        return super().forward(features)


def stage_aligners(
    student_head: HeadSpec, teacher_head: HeadSpec, parts: tuple[str, ...], fitted: bool = False
) -> nn.ModuleDict:
    """One :class:`ChannelAligner` per head branch part (``box``, ``cls``), for its stage outputs at every level.

    Stage widths are the same at every level of a Detect-family head, so each aligner maps ``L`` copies of the
    student's part width onto the teacher's. Built in the order of ``parts`` (that order fixes their random init).
    ``fitted``: :class:`FittedAligner` instead (a conv at every width, fitted on the first batch).
    """
    levels = teacher_head.num_levels
    aligner = FittedAligner if fitted else ChannelAligner
    return nn.ModuleDict(
        {
            part: aligner((student_head.stage_channels[part],) * levels, (teacher_head.stage_channels[part],) * levels)
            for part in parts
        }
    )


def spatial_attention(feat: Tensor, temperature: float = 1.0) -> Tensor:
    """Spatial attention ``A^S = H W softmax_hw(mean_c |F| / T)``.

    Args:
        feat: (B, D, H, W) feature map.
        temperature: T > 0; lower values sharpen the map.

    Returns:
        (B, H, W) non-negative map whose mean over the H·W cells of each image is 1.
    """
    batch, _, height, width = feat.shape
    logits = feat.abs().mean(dim=1).flatten(1) / temperature
    return (height * width * logits.softmax(dim=1)).view(batch, height, width)


def channel_attention(feat: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-pixel channel attention ``A^C = D softmax_c(|F| / T)`` (PGD).

    Args:
        feat: (B, D, H, W) feature map.
        temperature: T > 0.

    Returns:
        (B, D, H, W) map whose mean over the D channels of each cell is 1.
    """
    return feat.shape[1] * (feat.abs() / temperature).softmax(dim=1)


def pooled_channel_attention(feat: Tensor, temperature: float = 1.0) -> Tensor:
    """Channel attention pooled over space ``A^C = D softmax_c(mean_hw |F| / T)`` (FGD).

    Args:
        feat: (B, D, H, W) feature map.
        temperature: T > 0.

    Returns:
        (B, D) map whose mean over the D channels of each image is 1.
    """
    return feat.shape[1] * (feat.abs().mean(dim=(2, 3)) / temperature).softmax(dim=1)


__all__ = [
    "ChannelAligner",
    "FittedAligner",
    "channel_attention",
    "pooled_channel_attention",
    "spatial_attention",
    "stage_aligners",
]


def cell_predictions(view: View) -> tuple[Tensor, Tensor]:
    """Each cell's prediction: (B, A / k, C) class logits, the largest over the cell's k anchors per class, and
    (B, A / k, 4) the box (xyxy pixels) of its anchor with the highest top logit. The view itself for k = 1."""
    per_cell = view.anchors_per_cell
    if per_cell == 1:
        return view.cls_logits, view.boxes
    batch, anchors, num_classes = view.cls_logits.shape
    logits = view.cls_logits.view(batch, anchors // per_cell, per_cell, num_classes)
    best = logits.detach().amax(-1).argmax(-1)  # (B, cells): the cell's most confident anchor
    boxes = view.boxes.view(batch, anchors // per_cell, per_cell, 4)
    return logits.amax(2), boxes.gather(2, best[..., None, None].expand(-1, -1, 1, 4)).squeeze(2)


@dataclass
class MatchedPredictions:
    """Student and teacher predictions row by row: anchors (same layout) or cells (different layouts).

    Attributes:
        student_logits: (B, N, C) student class logits.
        teacher_logits: (B, N, C) teacher class logits.
        student_boxes: (B, N, 4) student boxes, xyxy, pixels.
        teacher_boxes: (B, N, 4) teacher boxes, xyxy, pixels.
    """

    student_logits: Tensor
    teacher_logits: Tensor
    student_boxes: Tensor
    teacher_boxes: Tensor


def match_predictions(student: View, teacher: View, per_anchor: bool) -> MatchedPredictions:
    """Pair the two views' predictions anchor by anchor (``per_anchor``, same anchor layout) or cell by cell."""
    if per_anchor:
        return MatchedPredictions(student.cls_logits, teacher.cls_logits, student.boxes, teacher.boxes)
    student_logits, student_boxes = cell_predictions(student)
    teacher_logits, teacher_boxes = cell_predictions(teacher)
    return MatchedPredictions(student_logits, teacher_logits, student_boxes, teacher_boxes)
