"""Shared attention maps on small hand-made tensors (yolokd/losses/common.py)."""

import math

import pytest
import torch

from yolokd.losses.common import (
    ChannelAligner,
    FittedAligner,
    channel_attention,
    pooled_channel_attention,
    spatial_attention,
)


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


def _affine_pair(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Student features of two levels (widths 4, 6), teacher features an exact affine map of them (widths 8, 6)."""
    generator = torch.Generator().manual_seed(seed)
    student = [torch.randn(3, c, 5, 5, generator=generator) for c in (4, 6)]
    maps = [torch.randn(t, s + 1, generator=generator) for s, t in ((4, 8), (6, 6))]
    pairs = zip(maps, student, strict=True)
    teacher = [torch.einsum("ts,bshw->bthw", m[:, :-1], f) + m[:, -1].view(1, -1, 1, 1) for m, f in pairs]
    return student, teacher, maps


def test_fitted_aligner_recovers_an_exact_affine_map_at_every_width():
    """The first call fits each level's 1x1 conv by least squares: an exact affine map (equal widths included) is
    recovered up to the small ridge, and the aligned features match the teacher's."""
    student, teacher, maps = _affine_pair()
    aligner = FittedAligner((4, 6), (8, 6))
    assert not bool(aligner.fitted)
    aligned = aligner(student, teacher)
    assert bool(aligner.fitted)
    for conv, weights, out, target in zip(aligner.convs, maps, aligned, teacher, strict=True):
        assert isinstance(conv, torch.nn.Conv2d)
        assert torch.allclose(conv.weight.flatten(1), weights[:, :-1], atol=2e-2)
        assert torch.allclose(out, target, atol=5e-2, rtol=1e-2)


def test_fitted_aligner_fits_once_and_the_fit_survives_a_state_dict_round_trip():
    """Later calls do not refit; a fresh aligner loading the state (resume) keeps the fit and does not refit either;
    loading an unfitted state (the balance putting the modules back) makes the next call fit again."""
    student, teacher, _ = _affine_pair(0)
    other_student, other_teacher, _ = _affine_pair(1)
    aligner = FittedAligner((4, 6), (8, 6))
    unfitted = {k: v.clone() for k, v in aligner.state_dict().items()}
    aligner(student, teacher)
    fitted = [conv.weight.clone() for conv in aligner.convs]
    aligner(other_student, other_teacher)
    assert all(torch.equal(a, conv.weight) for a, conv in zip(fitted, aligner.convs, strict=True))

    resumed = FittedAligner((4, 6), (8, 6))
    resumed.load_state_dict(aligner.state_dict())
    resumed(other_student, other_teacher)
    assert all(torch.equal(a, conv.weight) for a, conv in zip(fitted, resumed.convs, strict=True))

    resumed.load_state_dict(unfitted)
    resumed(other_student, other_teacher)
    assert not torch.equal(fitted[0], resumed.convs[0].weight)
