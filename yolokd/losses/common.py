"""Pieces several methods share: channel aligners (student width -> teacher width)."""

from __future__ import annotations

from torch import Tensor, nn


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
