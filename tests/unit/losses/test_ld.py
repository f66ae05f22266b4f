"""LD maths on small hand-made tensors (SPEC §6, §8)."""

import math

import pytest
import torch
import torch.nn.functional as F
from loss_inputs import targets_for as _targets

from yolokd.losses.ld import LDLoss, LDParams, dfl_kl
from yolokd.views import HeadSpec, View

REG_MAX = 4
SPEC = HeadSpec("DFL test head", 2, (8.0,), REG_MAX, ("one2many",), (8,), {"box": 8, "cls": 8}, 2)
DIRECT_SPEC = HeadSpec("direct test head", 2, (8.0,), 1, ("one2many", "one2one"), (8,), {"box": 8, "cls": 8}, 2)


def _view(box_output: torch.Tensor, cls_logits: torch.Tensor, reg_max: int = REG_MAX) -> View:
    batch, anchors, _ = cls_logits.shape
    return View(
        feats=[torch.zeros(batch, 8, 1, anchors)],
        cls_logits=cls_logits,
        box_output=box_output,
        boxes=torch.zeros(batch, anchors, 4),
        anchors=torch.zeros(anchors, 2),
        strides=torch.ones(anchors, 1),
        reg_max=reg_max,
    )


def _naive_dfl_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    out = torch.zeros(student.shape[0], dtype=student.dtype)
    for n in range(student.shape[0]):
        for side in range(4):
            p = torch.softmax(teacher[n, side] / temperature, 0)
            q = torch.softmax(student[n, side] / temperature, 0)
            out[n] += sum(p[b] * math.log(p[b] / q[b]) for b in range(student.shape[2])) * temperature**2
    return out


def test_dfl_kl_matches_loop_oracle():
    """The vectorised KL equals a per-anchor, per-side, per-bin Python loop (float64)."""
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 4, 5, dtype=torch.float64)
    expected = _naive_dfl_kl(student, teacher, 2.0)
    assert torch.allclose(dfl_kl(student, teacher, 2.0), expected, atol=1e-12)


def test_dfl_kl_one_hot_teacher_uniform_student_is_ln16_per_side():
    """One-hot teacher vs uniform student over 16 bins: KL = ln 16 per side, x T² (T=1: 4 ln16; T=10: 400 ln16)."""
    teacher = torch.zeros(1, 4, 16, dtype=torch.float64)
    teacher[..., 3] = 1e4  # softmax(t / T) is exactly one-hot in float64 for T <= 10
    student = torch.zeros(1, 4, 16, dtype=torch.float64)
    assert dfl_kl(student, teacher, 1.0).item() == pytest.approx(4 * math.log(16), rel=1e-12)
    assert dfl_kl(student, teacher, 10.0).item() == pytest.approx(4 * math.log(16) * 100, rel=1e-12)


def test_dfl_kl_zero_with_zero_gradient_at_teacher():
    """Equal distributions give zero KL and zero gradient."""
    logits = torch.randn(2, 4, 6, dtype=torch.float64)
    student = logits.clone().requires_grad_(True)
    loss = dfl_kl(student, logits, 10.0).sum()
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-12)


def test_identical_views_give_zero_loss():
    """Student view == teacher view: ld_loc is 0."""
    box_output, cls_logits = torch.randn(2, 5, 4 * REG_MAX), torch.randn(2, 5, 2)
    view = _view(box_output, cls_logits)
    terms = LDLoss(LDParams(), SPEC, SPEC)(view, view, _targets(torch.ones(2, 5, dtype=torch.bool)))
    assert terms["ld_loc"].item() == pytest.approx(0.0, abs=1e-6)


def test_module_value_weights_and_normalisation():
    """ld_loc = 0.25 * (1.5 / 0.25) * 2 * Σ_pos σ(max_c s) * dfl_kl(T=10) / (4R) / B, positives only."""
    torch.manual_seed(1)
    student_box, teacher_box = torch.randn(1, 3, 4 * REG_MAX), torch.randn(1, 3, 4 * REG_MAX)
    student_cls = torch.tensor([[[0.5, -1.0], [2.0, 0.0], [1.0, 1.0]]])
    fg_mask = torch.tensor([[True, False, True]])
    terms = LDLoss(LDParams(), SPEC, SPEC)(
        _view(student_box, student_cls), _view(teacher_box, torch.zeros(1, 3, 2)), _targets(fg_mask)
    )
    kl = dfl_kl(student_box.view(3, 4, REG_MAX), teacher_box.view(3, 4, REG_MAX), 10.0) / (4 * REG_MAX)
    positives_sum = torch.sigmoid(torch.tensor(0.5)) * kl[0] + torch.sigmoid(torch.tensor(1.0)) * kl[2]
    expected = 0.25 * (1.5 / 0.25) * 2 * positives_sum / 1  # B = 1 image
    assert terms["ld_loc"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_negative_anchors_do_not_contribute():
    """Changing the student's box output at a negative anchor leaves the loss unchanged."""
    student_box, teacher_box = torch.randn(1, 3, 4 * REG_MAX), torch.randn(1, 3, 4 * REG_MAX)
    cls_logits, targets = torch.randn(1, 3, 2), _targets(torch.tensor([[True, False, True]]))
    loss = LDLoss(LDParams(), SPEC, SPEC)
    before = loss(_view(student_box, cls_logits), _view(teacher_box, cls_logits), targets)["ld_loc"]
    student_box[0, 1] += 5.0
    after = loss(_view(student_box, cls_logits), _view(teacher_box, cls_logits), targets)["ld_loc"]
    assert after.item() == pytest.approx(before.item(), rel=1e-6)


def test_gradient_reaches_student_boxes_only():
    """Only the student's box output gets a gradient: its score weight is detached, teacher tensors get none."""
    student_box = torch.randn(1, 3, 4 * REG_MAX, requires_grad=True)
    student_cls = torch.randn(1, 3, 2, requires_grad=True)
    teacher_box = torch.randn(1, 3, 4 * REG_MAX, requires_grad=True)
    terms = LDLoss(LDParams(), SPEC, SPEC)(
        _view(student_box, student_cls),
        _view(teacher_box, torch.randn(1, 3, 2)),
        _targets(torch.ones(1, 3, dtype=torch.bool)),
    )
    terms["ld_loc"].backward()
    assert student_box.grad.abs().sum() > 0
    assert student_cls.grad is None and teacher_box.grad is None


def test_empty_gt_batch_is_finite_and_zero():
    """No positives: the term is exactly 0 and finite."""
    terms = LDLoss(LDParams(), SPEC, SPEC)(
        _view(torch.randn(2, 3, 4 * REG_MAX), torch.randn(2, 3, 2)),
        _view(torch.randn(2, 3, 4 * REG_MAX), torch.randn(2, 3, 2)),
        _targets(torch.zeros(2, 3, dtype=torch.bool)),
    )
    assert terms["ld_loc"].item() == 0.0


@pytest.mark.parametrize(("teacher", "student"), [(DIRECT_SPEC, SPEC), (SPEC, DIRECT_SPEC)], ids=["teacher", "student"])
def test_direct_regression_head_is_refused(teacher, student):
    """A reg_max=1 head on either side is a ValueError naming bckd / crosskd as the fix."""
    with pytest.raises(ValueError, match=r"reg_max=1 .*Use 'bckd'.*'crosskd'"):
        LDLoss(LDParams(), teacher, student)


def test_different_bin_counts_are_refused():
    """Teacher and student with different reg_max cannot compare bins: a ValueError names both."""
    other = HeadSpec("DFL test head", 2, (8.0,), 8, ("one2many",), (8,), {"box": 32, "cls": 8}, 2)
    with pytest.raises(ValueError, match="teacher reg_max=8, student reg_max=4"):
        LDLoss(LDParams(), other, SPEC)


def test_bad_temperature_rejected():
    """A non-positive temperature is a clear ValueError."""
    with pytest.raises(ValueError, match="temperature=0"):
        LDParams(temperature=0.0)


def test_batch_of_copies_gives_the_same_value():
    """The positives' sum is divided by the images B, not by N_pos: two copies of an image give one image's value."""
    torch.manual_seed(2)
    student_box, teacher_box = torch.randn(1, 3, 4 * REG_MAX), torch.randn(1, 3, 4 * REG_MAX)
    student_cls, fg_mask = torch.randn(1, 3, 2), torch.tensor([[True, False, True]])
    loss = LDLoss(LDParams(), SPEC, SPEC)
    teacher_cls = torch.zeros(1, 3, 2)
    one = loss(_view(student_box, student_cls), _view(teacher_box, teacher_cls), _targets(fg_mask))["ld_loc"]
    two = loss(
        _view(student_box.repeat(2, 1, 1), student_cls.repeat(2, 1, 1)),
        _view(teacher_box.repeat(2, 1, 1), teacher_cls.repeat(2, 1, 1)),
        _targets(fg_mask.repeat(2, 1)),
    )["ld_loc"]
    assert two.item() == pytest.approx(one.item(), rel=1e-6)


# A hand-made GFL-like batch for the LD/DFL balance: B = 2 images, 4 anchors each, 5 positives, 16 bins per side.
BINS = 16
FG_MASK = torch.tensor([[True, True, True, False], [True, True, False, False]])
TARGET_LTRB = torch.tensor(  # (B, A, 4) target distances, grid units
    [
        [[2.3, 4.7, 1.2, 6.5], [8.1, 3.4, 10.6, 0.8], [5.5, 5.5, 12.2, 3.9], [1.0, 1.0, 1.0, 1.0]],
        [[0.4, 7.7, 3.3, 9.2], [13.6, 2.1, 6.8, 4.4], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]],
    ],
    dtype=torch.float64,
)
STUDENT_SCORE_LOGITS = torch.tensor(  # (B, A, 2): student top scores σ = 0.38 ... 0.71 on the positives
    [[[-0.5, -2.0], [0.9, 0.1], [-1.0, 0.2], [0.0, 0.0]], [[0.5, -0.3], [-2.0, -0.1], [0.0, 0.0], [0.0, 0.0]]],
    dtype=torch.float64,
)
TARGET_SCORES = torch.tensor([[0.55, 0.80, 0.60, 0.0], [0.70, 0.45, 0.0, 0.0]], dtype=torch.float64)  # TAL w_u


def _bell(centres: torch.Tensor, width: float) -> torch.Tensor:
    """(B, A, 4, BINS) bin logits of a Gaussian bump at `centres` (B, A, 4), `width` bins wide."""
    bins = torch.arange(BINS, dtype=torch.float64)
    return -((bins - centres.unsqueeze(-1)) ** 2) / (2 * width**2)


def _reference_ld_and_dfl(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mmdetection LDHead (GFL), one 2-image GPU batch: LD un-normalised, DFL / S_r, both weight 0.25, avg_factor 4."""
    temperature = 10.0
    s, t = student[FG_MASK], teacher[FG_MASK]  # (N, 4, R)
    weight = torch.sigmoid(STUDENT_SCORE_LOGITS.max(-1).values)[FG_MASK]  # w_a
    soft_teacher = torch.softmax(t / temperature, -1)
    kl = F.kl_div(F.log_softmax(s / temperature, -1), soft_teacher, reduction="none").mean(-1) * temperature**2
    ld = 0.25 * (kl * weight[:, None]).sum() / 4
    label = TARGET_LTRB[FG_MASK]  # (N, 4)
    left = label.long()
    log_probs = F.log_softmax(s, -1)
    cross_left = -log_probs.gather(-1, left.unsqueeze(-1)).squeeze(-1)
    cross_right = -log_probs.gather(-1, (left + 1).unsqueeze(-1)).squeeze(-1)
    dfl = cross_left * (left + 1 - label) + cross_right * (label - left)
    dfl = 0.25 * (dfl * weight[:, None]).sum() / 4 / weight.sum()
    return ld, dfl


def _yolokd_ld_and_ultralytics_dfl(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """yolokd's ld_loc and Ultralytics' DFL term, each as the trainer adds it (x B; DFL x hyp dfl = 1.5)."""
    from ultralytics.utils.loss import DFLoss

    batch, anchors = FG_MASK.shape
    spec = HeadSpec("DFL test head", 2, (8.0,), BINS, ("one2many",), (8,), {"box": 8, "cls": 8}, 2)
    ld = LDLoss(LDParams(), spec, spec)(
        _view(student.reshape(batch, anchors, 4 * BINS), STUDENT_SCORE_LOGITS, BINS),
        _view(teacher.reshape(batch, anchors, 4 * BINS), torch.zeros(batch, anchors, 2), BINS),
        _targets(FG_MASK),
    )["ld_loc"]
    weight = TARGET_SCORES[FG_MASK].unsqueeze(-1)  # w_u, (N, 1)
    target_scores_sum = TARGET_SCORES.sum().clamp(min=1)
    dfl = DFLoss(BINS)(student[FG_MASK].reshape(-1, BINS), TARGET_LTRB[FG_MASK].clone()) * weight
    return ld * batch, 1.5 * dfl.sum() / target_scores_sum * batch


def _gradient_ratio(loss_fn, student: torch.Tensor, teacher: torch.Tensor) -> float:
    """|∇_s LD| / |∇_s DFL| on the student's bin logits."""
    norms = []
    for index in range(2):
        leaf = student.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(leaf, teacher)[index], leaf)
        norms.append(grad.norm())
    return (norms[0] / norms[1]).item()


def test_ld_to_dfl_gradient_ratio_matches_the_reference():
    """LD vs DFL gradient ratio on a hand-made case matches the reference's (mmdet LDHead) within 2x."""
    teacher = _bell(TARGET_LTRB + 0.3, width=1.0)  # sharp, near the target
    student = _bell(TARGET_LTRB - 1.5, width=3.0)  # broad and off by 1.5 bins
    ours = _gradient_ratio(_yolokd_ld_and_ultralytics_dfl, student, teacher)
    reference = _gradient_ratio(_reference_ld_and_dfl, student, teacher)
    assert 0.5 <= ours / reference <= 2.0, f"yolokd LD/DFL gradient ratio {ours:.4g}, reference {reference:.4g}"
