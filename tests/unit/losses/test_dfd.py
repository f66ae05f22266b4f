"""DFD maths on small hand-made tensors (SPEC §4)."""

import math

import pytest
import torch
from loss_inputs import feature_spec, run_loss

from yolokd.losses.dfd import DFDLoss, DFDParams, disparity_mask, region_loss


def _terms(loss: DFDLoss, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> dict[str, torch.Tensor]:
    return run_loss(loss, [student_feat], [teacher_feat])


# Two images, one channel, 2x2 cells. Student constant -> A(F_s) = 1. Teacher mean_c|F| = ln(v) + 1, so
# A(F_t) = 4 v / Σv: image 0 [.5, .5, .5, 2.5] (D = [.5, .5, .5, 1.5], mean .75); image 1 [1.2, 1, 1, .8]
# (D = [.2, 0, 0, .2], mean .1). A threshold over the whole batch (.425) would find no HD cell in image 1.
TEACHER = (torch.log(torch.tensor([[1.0, 1.0, 1.0, 5.0], [1.2, 1.0, 1.0, 0.8]])) + 1).view(2, 1, 2, 2)
STUDENT = torch.ones(2, 1, 2, 2)
EXPECTED_HIGH = torch.tensor([[[False, False], [False, True]], [[True, False], [False, True]]])


def test_mask_splits_cells_at_the_per_image_mean():
    """High disparity = D >= mean(D) of its own image, not of the batch."""
    assert torch.equal(disparity_mask(STUDENT, TEACHER), EXPECTED_HIGH)


def test_mask_matches_loop_oracle():
    """The vectorised mask equals a per-image, per-cell Python computation of eqs. 2-4."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 3, 4, dtype=torch.float64), torch.randn(2, 3, 3, 4, dtype=torch.float64)

    def attention(feat, b):
        cells = [(i, j) for i in range(3) for j in range(4)]
        logits = {c: sum(abs(feat[b, k, c[0], c[1]].item()) for k in range(3)) / 3 for c in cells}
        norm = sum(math.exp(v) for v in logits.values())
        return {c: 12 * math.exp(v) / norm for c, v in logits.items()}

    for b in range(2):
        a_s, a_t = attention(student, b), attention(teacher, b)
        disparity = {c: abs(a_t[c] - a_s[c]) for c in a_s}
        threshold = sum(disparity.values()) / len(disparity)
        oracle = torch.tensor([[disparity[(i, j)] >= threshold for j in range(4)] for i in range(3)])
        assert torch.equal(disparity_mask(student, teacher)[b], oracle)


def test_mask_carries_no_gradient():
    """The mask is computed without gradient even when the student requires one."""
    mask = disparity_mask(STUDENT.clone().requires_grad_(True), TEACHER)
    assert mask.dtype == torch.bool and not mask.requires_grad


def test_ld_term_is_squared_error_over_low_disparity_cells():
    """dfd_low_disparity = β Σ_{LD cells} (F_t - F_s)² / (B·D·H·W) on one level, the LD cells read off by hand."""
    low_cells = [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 1), (1, 1, 0)]  # (image, row, col)
    expected = sum((TEACHER[b, 0, i, j] - 1.0) ** 2 for b, i, j in low_cells) / 8
    terms = _terms(DFDLoss(DFDParams(low_disparity_weight=0.5), feature_spec(1), feature_spec(1)), STUDENT, TEACHER)
    assert terms["dfd_low_disparity"].item() == pytest.approx(0.5 * expected.item(), rel=1e-6)


def test_hd_term_goes_through_the_transformation_on_high_cells():
    """dfd_high_disparity = α Σ_{HD cells} (F_t - f_trans(F_s))² / (B·D·H·W) on one level."""
    loss = DFDLoss(DFDParams(high_disparity_weight=3.0), feature_spec(1), feature_spec(1))
    transformed = loss.transforms[0](STUDENT)
    expected = ((TEACHER - transformed) ** 2 * EXPECTED_HIGH.unsqueeze(1)).sum() / 8
    assert _terms(loss, STUDENT, TEACHER)["dfd_high_disparity"].item() == pytest.approx(3.0 * expected.item(), rel=1e-6)


def _pyramid(seed: int, scale: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Student and teacher features of a 3-level pyramid (B=2, D=4/6/8, 8x8/4x4/2x2 cells at scale 1).

    ``scale`` > 1 upsamples both sides at every level (nearest: the same content at a higher resolution).
    """
    generator = torch.Generator().manual_seed(seed)
    student, teacher = [], []
    for channels, size in zip((4, 6, 8), (8, 4, 2), strict=True):
        pair = torch.randn(2, 2, channels, size, size, generator=generator)
        pair[1] = 0.6 * pair[0] + 0.8 * pair[1]  # the teacher correlates with the student
        if scale > 1:
            pair = torch.nn.functional.interpolate(pair.flatten(0, 1), scale_factor=scale, mode="nearest")
            pair = pair.unflatten(0, (2, 2))
        student.append(pair[0])
        teacher.append(pair[1])
    return student, teacher


def test_levels_are_pooled_into_one_per_element_mean():
    """Both terms are the pyramid's sums over every level divided by Σ_l B·D_l·H_l·W_l (a loop oracle per level)."""
    torch.manual_seed(0)
    loss = DFDLoss(
        DFDParams(high_disparity_weight=2.0, low_disparity_weight=0.5), feature_spec(4, 6, 8), feature_spec(4, 6, 8)
    )
    student, teacher = _pyramid(seed=1)
    masks = [disparity_mask(s, t) for s, t in zip(student, teacher, strict=True)]
    elements = sum(t.numel() for t in teacher)
    hd = sum(region_loss(f(s), t, m) for f, s, t, m in zip(loss.transforms, student, teacher, masks, strict=True))
    ld = sum(region_loss(s, t, ~m) for s, t, m in zip(student, teacher, masks, strict=True))
    terms = run_loss(loss, student, teacher)
    assert terms["dfd_high_disparity"].item() == pytest.approx(2.0 * hd.item() / elements, rel=1e-5)
    assert terms["dfd_low_disparity"].item() == pytest.approx(0.5 * ld.item() / elements, rel=1e-5)


def test_loss_does_not_depend_on_the_resolution():
    """The same feature pair at 2x the resolution (every level, both sides upsampled) gives the same loss within 5%."""
    torch.manual_seed(0)
    loss = DFDLoss(DFDParams(), feature_spec(4, 6, 8), feature_spec(4, 6, 8))
    base = run_loss(loss, *_pyramid(seed=3))
    doubled = run_loss(loss, *_pyramid(seed=3, scale=2))
    for name in ("dfd_high_disparity", "dfd_low_disparity"):
        assert doubled[name].item() == pytest.approx(base[name].item(), rel=0.05), name


def test_transformation_module_is_trained():
    """One optimiser step on the loss changes every parameter of f_trans."""
    torch.manual_seed(0)
    loss = DFDLoss(DFDParams(), feature_spec(4), feature_spec(4))
    before = [p.detach().clone() for p in loss.transforms.parameters()]
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.1)
    sum(_terms(loss, torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)).values()).backward()
    optimizer.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, loss.transforms.parameters(), strict=True))


def test_student_equal_to_teacher_zeroes_the_strict_term():
    """At F_s == F_t every cell ties with the mean (HD): dfd_low_disparity = 0,
    dfd_high_disparity = α Σ (F_t - f_trans(F_t))² / N."""
    torch.manual_seed(0)
    feat = torch.randn(2, 4, 3, 3)
    loss = DFDLoss(DFDParams(), feature_spec(4), feature_spec(4))
    terms = _terms(loss, feat.clone(), feat)
    lenient = 2.8 * ((feat - loss.transforms[0](feat)) ** 2).mean()
    assert terms["dfd_low_disparity"].item() == 0.0
    assert terms["dfd_high_disparity"].item() == pytest.approx(lenient.item(), rel=1e-6)


def test_hd_and_low_disparity_weights_are_configurable_either_way():
    """α < β is accepted and each term scales with its own weight only."""
    feats = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    torch.manual_seed(0)
    unit = _terms(
        DFDLoss(DFDParams(high_disparity_weight=1.0, low_disparity_weight=1.0), feature_spec(4), feature_spec(4)),
        *feats,
    )
    torch.manual_seed(0)
    swapped = _terms(
        DFDLoss(DFDParams(high_disparity_weight=0.5, low_disparity_weight=3.0), feature_spec(4), feature_spec(4)),
        *feats,
    )
    assert swapped["dfd_high_disparity"].item() == pytest.approx(0.5 * unit["dfd_high_disparity"].item(), rel=1e-6)
    assert swapped["dfd_low_disparity"].item() == pytest.approx(3.0 * unit["dfd_low_disparity"].item(), rel=1e-6)


def test_default_weights_keep_the_paper_ratio():
    """Defaults α = 2.8, β = 1 keep the paper's α/β = 2.8 > 1."""
    params = DFDParams()
    assert params.high_disparity_weight / params.low_disparity_weight == pytest.approx(2.8e-5 / 1e-5)


def test_region_loss_of_an_empty_region_is_zero_with_gradient():
    """No selected cell gives exactly 0 and a zero (not missing) gradient."""
    student = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = region_loss(student, torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(student.grad, torch.zeros_like(student))


@pytest.mark.parametrize(
    ("key", "value"), [("high_disparity_weight", -1.0), ("low_disparity_weight", -0.1), ("trans_expansion", 0.0)]
)
def test_bad_parameters_rejected(key, value):
    """Negative weights and a non-positive expansion are ValueErrors naming the key."""
    with pytest.raises(ValueError, match=key):
        DFDParams(**{key: value})


def test_fitted_aligner_removes_a_linear_change_of_basis():
    """Teacher features an affine map of a narrower student's (another basis, as for two models trained apart): the
    strict term through a random aligner is large; with ``aligner_fit`` the first call fits the map and it is ~0."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(4, 3, 6, 6, generator=generator)
    mixing = torch.randn(5, 3, generator=generator)
    teacher = torch.einsum("ts,bshw->bthw", mixing, student) + 0.5
    terms = {}
    for fit in (False, True):
        torch.manual_seed(0)
        loss = DFDLoss(DFDParams(aligner_fit=fit), feature_spec(5), feature_spec(3))
        terms[fit] = _terms(loss, student, teacher)
    strict = "dfd_low_disparity"
    assert terms[False][strict] > 0.1 and terms[True][strict] < 1e-3 * terms[False][strict], terms
