"""Properties every neck-feature loss shares (mimic, DFD, MGD, PKD, CWD; SPEC §7)."""

import pytest
import torch
from loss_inputs import feature_spec, run_loss

from yolokd.losses import LOSSES

FEATURE_LOSSES = ["mimic", "dfd", "mgd", "pkd", "cwd"]


def _feats(channels: tuple[int, ...], requires_grad: bool = False) -> list[torch.Tensor]:
    sizes = [(4, 4), (2, 2)]
    return [torch.randn(2, c, *size, requires_grad=requires_grad) for c, size in zip(channels, sizes, strict=True)]


def _loss(name: str, student_channels: tuple[int, ...], teacher_channels: tuple[int, ...]):
    cls = LOSSES[name]
    return cls(cls.Params(), feature_spec(*teacher_channels), feature_spec(*student_channels))


@pytest.mark.parametrize("name", FEATURE_LOSSES)
@pytest.mark.parametrize("student_channels", [(4, 8), (2, 4)], ids=["equal-widths", "aligned-widths"])
def test_gradients_reach_student_never_teacher(name, student_channels):
    """Every term gives each student level a gradient; teacher tensors get none."""
    torch.manual_seed(0)
    student, teacher = _feats(student_channels, requires_grad=True), _feats((4, 8), requires_grad=True)
    terms = run_loss(_loss(name, student_channels, (4, 8)), student, teacher)
    for term in terms.values():
        grads = torch.autograd.grad(term, student, retain_graph=True)
        assert all(g.abs().sum() > 0 for g in grads)
    sum(terms.values()).backward()
    assert all(t.grad is None for t in teacher)


@pytest.mark.parametrize("name", FEATURE_LOSSES)
def test_trainable_parts_get_gradients_and_aligners_map_widths(name):
    """With narrower student levels, every trainable KD parameter (aligners, f_trans, generators) gets a gradient."""
    torch.manual_seed(0)
    loss = _loss(name, (2, 4), (4, 8))
    sum(run_loss(loss, _feats((2, 4)), _feats((4, 8))).values()).backward()
    params = list(loss.parameters())
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


@pytest.mark.parametrize("name", ["mimic", "pkd", "cwd"])
def test_zero_at_student_equal_to_teacher(name):
    """Strict-only losses are exactly 0 at F_s == F_t through identity aligners (DFD, MGD: see their tests)."""
    teacher = _feats((4, 8))
    terms = run_loss(_loss(name, (4, 8), (4, 8)), [t.clone() for t in teacher], teacher)
    assert all(term.item() == pytest.approx(0.0, abs=1e-6) for term in terms.values())


@pytest.mark.parametrize("name", FEATURE_LOSSES)
def test_finite_on_a_batch_without_gt(name):
    """Feature losses do not read GT: an empty-GT batch gives finite terms."""
    terms = run_loss(_loss(name, (4, 8), (4, 8)), _feats((4, 8)), _feats((4, 8)))
    assert all(torch.isfinite(term) for term in terms.values())


@pytest.mark.parametrize("name", FEATURE_LOSSES)
def test_terms_are_zero_dim_and_named(name):
    """Each loss returns 0-d terms named <loss>_<suffix>, as declared by term_names."""
    loss = _loss(name, (4, 8), (4, 8))
    terms = run_loss(loss, _feats((4, 8)), _feats((4, 8)))
    assert tuple(terms) == loss.term_names and all(term.ndim == 0 for term in terms.values())
