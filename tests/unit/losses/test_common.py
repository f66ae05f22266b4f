"""Shared attention maps on small hand-made tensors (yolokd/losses/common.py)."""

import math

import pytest
import torch

from yolokd.losses.common import ChannelAligner, channel_attention, pooled_channel_attention, spatial_attention


def test_spatial_attention_known_value():
    """mean_c |F| = ln([1, 1, 1, 5]) + 1 gives A = 4 * [1, 1, 1, 5] / 8."""
    feat = (torch.log(torch.tensor([1.0, 1.0, 1.0, 5.0])) + 1).view(1, 1, 2, 2)
    expected = torch.tensor([[[0.5, 0.5], [0.5, 2.5]]])
    assert torch.allclose(spatial_attention(feat), expected, atol=1e-6)


def test_spatial_attention_uses_magnitudes_and_temperature():
    """Flipping signs changes nothing; T = 2 on doubled features gives the T = 1 map."""
    feat = torch.randn(2, 3, 4, 5)
    assert torch.allclose(spatial_attention(-feat), spatial_attention(feat))
    assert torch.allclose(spatial_attention(2 * feat, temperature=2.0), spatial_attention(feat), atol=1e-6)


def test_spatial_attention_mean_is_one_per_image():
    """A^S averages to 1 over the cells of every image."""
    attention = spatial_attention(torch.randn(3, 4, 5, 6))
    assert torch.allclose(attention.mean(dim=(1, 2)), torch.ones(3), atol=1e-6)


def test_channel_attention_known_value_per_pixel():
    """|F| = (0, ln 3) at a cell gives A^C = 2 * (1/4, 3/4) there."""
    feat = torch.tensor([0.0, -math.log(3.0)]).view(1, 2, 1, 1)
    assert torch.allclose(channel_attention(feat).flatten(), torch.tensor([0.5, 1.5]), atol=1e-6)


def test_pooled_channel_attention_known_value():
    """Spatial means |F| = (0, ln 3) give A^C = 2 * (1/4, 3/4), one value per image and channel."""
    feat = torch.tensor([[0.0, 0.0], [math.log(3.0), -math.log(3.0)]]).view(1, 2, 1, 2)
    assert torch.allclose(pooled_channel_attention(feat), torch.tensor([[0.5, 1.5]]), atol=1e-6)


def test_aligner_is_identity_for_equal_widths():
    """Equal widths keep the tensor itself; different widths get a trainable 1x1 conv."""
    aligner = ChannelAligner((4, 8), (4, 16))
    feats = [torch.randn(1, 4, 2, 2), torch.randn(1, 8, 2, 2)]
    aligned = aligner(feats)
    assert aligned[0] is feats[0] and aligned[1].shape == (1, 16, 2, 2)
    assert sum(p.numel() for p in aligner.parameters()) == 8 * 16 + 16


def test_aligner_rejects_level_mismatch():
    """Different level counts raise a ValueError naming both."""
    with pytest.raises(ValueError, match="3 levels, teacher 2"):
        ChannelAligner((4, 8, 16), (4, 8))
