"""PKD maths on small hand-made tensors (SPEC §6)."""

import pytest
import torch
from loss_inputs import feature_spec, run_loss

from yolokd.losses.pkd import PKDLoss, PKDParams, pkd_loss, standardize_channels


def test_invariant_to_positive_per_channel_affine_change_of_the_student():
    """Scaling each student channel by a > 0 and shifting it by b leaves the loss unchanged."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    scale = torch.tensor([0.1, 2.0, 30.0], dtype=torch.float64).view(1, 3, 1, 1)
    shift = torch.tensor([-5.0, 0.0, 7.0], dtype=torch.float64).view(1, 3, 1, 1)
    changed = pkd_loss(scale * student + shift, teacher).item()
    assert changed == pytest.approx(pkd_loss(student, teacher).item(), rel=1e-4)  # up to the 1e-6 added to std


def test_zero_when_the_student_is_an_affine_copy_of_the_teacher():
    """F_s = a F_t + b with a > 0 (a = 1, b = 0 included) gives zero loss."""
    teacher = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert pkd_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-12)
    assert pkd_loss(3 * teacher + 1, teacher).item() == pytest.approx(0.0, abs=1e-10)


def test_anti_correlated_channel_gives_two():
    """r = -1 on the only channel: mean((ẑ_s - ẑ_t)²) / 2 = 1 - r = 2."""
    teacher = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64).view(1, 1, 2, 2)
    assert pkd_loss(-teacher, teacher).item() == pytest.approx(2.0, abs=1e-5)


def test_standardised_channels_have_zero_mean_unit_std():
    """Every channel has mean 0 and population std 1 over B·H·W after standardising."""
    feat = standardize_channels(torch.randn(3, 4, 5, 5, dtype=torch.float64) * 7 + 2)
    assert torch.allclose(feat.mean(dim=(0, 2, 3)), torch.zeros(4, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(feat.std(dim=(0, 2, 3), correction=0), torch.ones(4, dtype=torch.float64), atol=1e-6)


def test_constant_map_on_a_single_cell_stays_finite():
    """A 1x1 map with batch 1 (one value per channel) gives a finite loss, not NaN."""
    loss = pkd_loss(torch.randn(1, 2, 1, 1, requires_grad=True), torch.randn(1, 2, 1, 1))
    assert torch.isfinite(loss)


def test_module_sums_levels_with_weight():
    """pkd_feat = w Σ_levels pkd_loss(level) with identity aligners."""
    torch.manual_seed(0)
    student = [torch.randn(2, 4, 4, 4), torch.randn(2, 8, 2, 2)]
    teacher = [torch.randn(2, 4, 4, 4), torch.randn(2, 8, 2, 2)]
    terms = run_loss(PKDLoss(PKDParams(weight=6.0), feature_spec(4, 8), feature_spec(4, 8)), student, teacher)
    expected = 6.0 * (pkd_loss(student[0], teacher[0]) + pkd_loss(student[1], teacher[1]))
    assert terms["pkd_feat"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_negative_weight_rejected():
    """A negative weight is a ValueError naming it."""
    with pytest.raises(ValueError, match="weight"):
        PKDParams(weight=-1.0)
