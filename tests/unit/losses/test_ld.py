"""LD maths on small hand-made tensors (SPEC §6, §8)."""

import math

import pytest
import torch
from loss_inputs import targets_for as _targets

from yolokd.engine.views import View
from yolokd.heads.detect import HeadSpec
from yolokd.losses.ld import LDLoss, LDParams, dfl_kl

REG_MAX = 4
SPEC = HeadSpec("DFL test head", 2, (8.0,), REG_MAX, ("one2many",), (8,), {"box": 8, "cls": 8})
DIRECT_SPEC = HeadSpec("direct test head", 2, (8.0,), 1, ("one2many", "one2one"), (8,), {"box": 8, "cls": 8})


def _view(box_output: torch.Tensor, cls_logits: torch.Tensor) -> View:
    batch, anchors, _ = cls_logits.shape
    return View(
        feats=[torch.zeros(batch, 8, 1, anchors)],
        cls_logits=cls_logits,
        box_output=box_output,
        boxes=torch.zeros(batch, anchors, 4),
        anchors=torch.zeros(anchors, 2),
        strides=torch.ones(anchors, 1),
        reg_max=REG_MAX,
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
    """ld_loc = 0.25 * Σ_pos σ(max_c s) * dfl_kl(T=10) / (4R) / N_pos, positives only."""
    torch.manual_seed(1)
    student_box, teacher_box = torch.randn(1, 3, 4 * REG_MAX), torch.randn(1, 3, 4 * REG_MAX)
    student_cls = torch.tensor([[[0.5, -1.0], [2.0, 0.0], [1.0, 1.0]]])
    fg_mask = torch.tensor([[True, False, True]])
    terms = LDLoss(LDParams(), SPEC, SPEC)(
        _view(student_box, student_cls), _view(teacher_box, torch.zeros(1, 3, 2)), _targets(fg_mask)
    )
    kl = dfl_kl(student_box.view(3, 4, REG_MAX), teacher_box.view(3, 4, REG_MAX), 10.0) / (4 * REG_MAX)
    expected = 0.25 * (torch.sigmoid(torch.tensor(0.5)) * kl[0] + torch.sigmoid(torch.tensor(1.0)) * kl[2]) / 2
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
    other = HeadSpec("DFL test head", 2, (8.0,), 8, ("one2many",), (8,), {"box": 32, "cls": 8})
    with pytest.raises(ValueError, match="teacher reg_max=8, student reg_max=4"):
        LDLoss(LDParams(), other, SPEC)


def test_bad_temperature_rejected():
    """A non-positive temperature is a clear ValueError."""
    with pytest.raises(ValueError, match="temperature=0"):
        LDParams(temperature=0.0)
