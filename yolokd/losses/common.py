"""Pieces several methods share: channel aligners (student width -> teacher width) and attention maps.

Attention maps (Yang et al., FGD, CVPR 2022, https://arxiv.org/abs/2111.11837; the same forms are used by PGD and
DFD): a spatial map ``A^S = H W softmax_hw(mean_c |F| / T)`` (mean 1 over the cells of each image) and channel maps
``A^C = C softmax_c(|F| / T)``, either per pixel (PGD) or pooled over space (FGD). They are plain functions so
every method computes them the same way; callers decide whether to detach.
"""

from __future__ import annotations

from torch import Tensor, nn

from yolokd.views import HeadSpec


class ChannelAligner(nn.Module):
    """Per-level 1x1 convs mapping student feature widths onto the teacher's; identity where widths match.

    Train-only: aligners live in the loss module, are optimised by the KD optimiser and never exported.

    Args:
        student_channels: D_s of each level.
        teacher_channels: D_t of each level.
    """

    def __init__(self, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...]) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"student has {len(student_channels)} levels, teacher {len(teacher_channels)}")
        self.convs = nn.ModuleList(
            nn.Identity() if s == t else nn.Conv2d(s, t, kernel_size=1)
            for s, t in zip(student_channels, teacher_channels, strict=True)
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """L tensors (B, D_s, H, W) -> L tensors (B, D_t, H, W)."""
        return [conv(feature) for conv, feature in zip(self.convs, features, strict=True)]


def stage_aligners(student_head: HeadSpec, teacher_head: HeadSpec, parts: tuple[str, ...]) -> nn.ModuleDict:
    """One :class:`ChannelAligner` per head branch part (``box``, ``cls``), for its stage outputs at every level.

    Stage widths are the same at every level of a Detect-family head, so each aligner maps ``L`` copies of the
    student's part width onto the teacher's. Built in the order of ``parts`` (that order fixes their random init).
    """
    levels = teacher_head.num_levels
    return nn.ModuleDict(
        {
            part: ChannelAligner(
                (student_head.stage_channels[part],) * levels, (teacher_head.stage_channels[part],) * levels
            )
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


__all__ = ["ChannelAligner", "channel_attention", "pooled_channel_attention", "spatial_attention", "stage_aligners"]
