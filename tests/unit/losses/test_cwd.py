"""CWD maths on small hand-made tensors (SPEC §6)."""

import math

import pytest
import torch
from loss_inputs import feature_spec, run_loss

from yolokd.losses.cwd import CWDLoss, CWDParams, cwd_loss


def test_invariant_to_a_constant_added_to_a_student_channel_map():
    """Adding c_d to every cell of student channel d changes nothing (softmax over cells)."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    shifted = student + torch.tensor([5.0, -2.0, 0.3], dtype=torch.float64).view(1, 3, 1, 1)
    assert cwd_loss(shifted, teacher, 1.0).item() == pytest.approx(cwd_loss(student, teacher, 1.0).item())


def test_known_value():
    """Teacher uniform over 2 cells, student (3/4, 1/4): KL = ½ ln(4/3), averaged over B·D = 1."""
    student = torch.tensor([math.log(3.0), 0.0]).view(1, 1, 1, 2)
    assert cwd_loss(student, torch.zeros(1, 1, 1, 2), 1.0).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)


def test_never_negative_when_the_true_divergence_is_zero():
    """A shifted copy of the teacher (true KL 0, unclamped float32 sum -1.2e-6) gives a loss in [0, 1e-6]."""
    torch.manual_seed(0)
    feat = torch.randn(4, 64, 20, 20) * 3
    assert 0.0 <= cwd_loss(feat + 7.3, feat, 1.0).item() < 1e-6


def test_temperature_scales_by_tau_squared():
    """Doubling the logits and τ = 2 gives the τ = 1 divergence times τ² = 4."""
    student = torch.tensor([2 * math.log(3.0), 0.0]).view(1, 1, 1, 2)
    loss = cwd_loss(student, torch.zeros(1, 1, 1, 2), 2.0)
    assert loss.item() == pytest.approx(4 * 0.5 * math.log(4 / 3), abs=1e-6)


def test_normalised_by_batch_and_channels():
    """Repeating one (image, channel) map over B = 2 and D = 3 leaves the loss unchanged."""
    student, teacher = torch.randn(1, 1, 3, 3), torch.randn(1, 1, 3, 3)
    repeated = cwd_loss(student.expand(2, 3, 3, 3), teacher.expand(2, 3, 3, 3), 1.0)
    assert repeated.item() == pytest.approx(cwd_loss(student, teacher, 1.0).item(), rel=1e-6)


def test_module_sums_levels_with_weight():
    """cwd_feat = w Σ_levels cwd_loss(level, τ) with identity aligners."""
    torch.manual_seed(0)
    student = [torch.randn(2, 4, 4, 4), torch.randn(2, 8, 2, 2)]
    teacher = [torch.randn(2, 4, 4, 4), torch.randn(2, 8, 2, 2)]
    params = CWDParams(weight=3.0, temperature=2.0)
    terms = run_loss(CWDLoss(params, feature_spec(4, 8), feature_spec(4, 8)), student, teacher)
    expected = 3.0 * (cwd_loss(student[0], teacher[0], 2.0) + cwd_loss(student[1], teacher[1], 2.0))
    assert terms["cwd_feat"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(("key", "value"), [("weight", -1.0), ("temperature", 0.0)])
def test_bad_parameters_rejected(key, value):
    """A negative weight or a non-positive τ is a ValueError naming the key."""
    with pytest.raises(ValueError, match=key):
        CWDParams(**{key: value})
