"""MGD maths on small hand-made tensors (SPEC §6)."""

import pytest
import torch
from loss_inputs import feature_spec, run_loss

from yolokd.losses.mgd import MGDLoss, MGDParams, mgd_loss, random_spatial_mask


def test_mask_ratio_zero_reduces_to_generator_plus_squared_error():
    """With λ = 0 nothing is masked: mgd_feat = α Σ (G(F_s) - F_t)² / B."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    loss = MGDLoss(MGDParams(weight=0.5, mask_ratio=0.0), feature_spec(4), feature_spec(4))
    expected = 0.5 * ((loss.generators[0](student) - teacher) ** 2).sum() / 2
    assert run_loss(loss, [student], [teacher])["mgd_feat"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_mask_drops_whole_cells_at_the_ratio():
    """Each cell is dropped across all channels with probability λ (0.65 on a 2x64x64 draw)."""
    torch.manual_seed(0)
    mask = random_spatial_mask(torch.zeros(2, 5, 64, 64), 0.65)
    assert mask.shape == (2, 1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert (1 - mask.mean()).item() == pytest.approx(0.65, abs=0.02)


def test_mgd_loss_known_value():
    """Σ (G - F_t)² with hand-made values: (1-0)² + (3-1)² = 5."""
    generated = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    teacher = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    assert mgd_loss(generated, teacher).item() == 5.0


def test_zero_at_teacher_needs_an_identity_generator():
    """At F_s == F_t the term is Σ (G(M ⊙ F_t) - F_t)²: 0 once G is the identity and nothing is masked."""
    feat = torch.rand(2, 3, 4, 4)  # non-negative, so ReLU inside the identity generator changes nothing
    loss = MGDLoss(MGDParams(mask_ratio=0.0), feature_spec(3), feature_spec(3))
    with torch.no_grad():
        for conv in (loss.generators[0][0], loss.generators[0][2]):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[:, :, 1, 1] = torch.eye(3)
    assert run_loss(loss, [feat.clone()], [feat])["mgd_feat"].item() == 0.0


def test_generator_is_trained():
    """One optimiser step on the loss changes the generator's parameters."""
    torch.manual_seed(0)
    loss = MGDLoss(MGDParams(weight=1.0), feature_spec(4), feature_spec(4))
    before = [p.detach().clone() for p in loss.generators.parameters()]
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.1)
    run_loss(loss, [torch.randn(2, 4, 4, 4)], [torch.randn(2, 4, 4, 4)])["mgd_feat"].backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, loss.generators.parameters(), strict=True))


@pytest.mark.parametrize(("key", "value"), [("weight", -1.0), ("mask_ratio", 1.0), ("mask_ratio", -0.1)])
def test_bad_parameters_rejected(key, value):
    """A negative weight or a mask ratio outside [0, 1) is a ValueError naming the key."""
    with pytest.raises(ValueError, match=key):
        MGDParams(**{key: value})
