"""Building blocks shared by the dense heads of mmdetection's families (GFL, FCOS, RetinaNet).

Their towers are stacks of 3x3 conv -> GroupNorm -> ReLU (mmdetection's ``ConvModule`` with ``norm_cfg=GN``; RetinaNet's
reference config has no norm: 3x3 conv with bias -> ReLU), one tower per branch, shared by every pyramid level; the
regression output of each level is multiplied by a learnable scalar (mmcv's ``Scale``; not in RetinaNet), so one
shared predictor can serve levels of different object sizes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

GN_GROUPS = 32  # mmdetection's GroupNorm(32) on 256-wide towers


def group_count(channels: int, groups: int = GN_GROUPS) -> int:
    """GroupNorm groups for a tower of ``channels``: 32 when it divides the width, else the largest common divisor."""
    return math.gcd(groups, channels)


class ConvNormAct(nn.Module):
    """One tower stage: 3x3 conv (no bias) -> GroupNorm -> ReLU, or without ``norm``: 3x3 conv (bias 0) -> ReLU.

    ``norm`` is the stage's pre-activation point (what CrossKD cuts at; an ``nn.Identity`` without normalisation, so
    the point is the conv's output), ``act`` its activation; the ReLU is not in-place, so a recorded pre-activation
    keeps its values.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm)
        self.norm = nn.GroupNorm(group_count(out_channels), out_channels) if norm else nn.Identity()
        self.act = nn.ReLU()
        nn.init.normal_(self.conv.weight, std=0.01)
        if not norm:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, D_in, H, W) -> (B, D_out, H, W)."""
        return self.act(self.norm(self.conv(x)))


def tower(width: int, stages: int, norm: bool = True) -> nn.Sequential:
    """``stages`` :class:`ConvNormAct` of ``width`` channels (input and output), with GroupNorm or without."""
    return nn.Sequential(*(ConvNormAct(width, width, norm) for _ in range(stages)))


class Scale(nn.Module):
    """A learnable scalar that multiplies its input (one per pyramid level)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        """x * scale, any shape."""
        return x * self.scale


def predictor(in_channels: int, out_channels: int, bias: float = 0.0) -> nn.Conv2d:
    """The 3x3 conv after a tower (mmdetection's heads): weights N(0, 0.01), constant bias."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, bias)
    return conv


def prior_bias(prior_probability: float = 0.01) -> float:
    """Classifier bias so that every sigmoid starts at ``prior_probability`` (RetinaNet's focal-loss init)."""
    return -math.log((1 - prior_probability) / prior_probability)
