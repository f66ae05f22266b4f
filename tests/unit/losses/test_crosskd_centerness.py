"""CrossKD's centerness term (``ctr_weight``, the authors' ATSS config): known values, positives across anchor layouts,
FCOS -> FCOS, FCOS -> YOLO and the refusal of a teacher without centerness."""

import copy
import math

import pytest
import torch
from dense_models import tiny_fcos
from loss_inputs import targets_for
from ultralytics.nn.tasks import DetectionModel

from yolokd.heads import StageRecorder, adapter_for
from yolokd.losses.crosskd import CrossKDLoss, CrossKDParams, center_kd_loss, positives_in_layout
from yolokd.views import View

BRANCH = "one2many"


def _yolov8n(seed: int) -> DetectionModel:
    """An untrained YOLOv8n (nc=3) in eval mode, BatchNorm statistics from one random batch (O(1) features)."""
    torch.manual_seed(seed)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 64, 64))
    return model.eval()


def _view(model, images: torch.Tensor, parts: tuple[str, ...]) -> View:
    adapter = adapter_for(model)
    recorder = StageRecorder(adapter, (BRANCH,), parts)
    with adapter.raw_outputs(), recorder.recording():
        raw = adapter.split_branches(model(images))[BRANCH]
        return adapter.build_view(raw, recorder.stages(BRANCH))


def _run(teacher, student, params: CrossKDParams, positives: int = 6):
    """The loss, its terms and the cross-head outputs on one 2-image batch; the first ``positives`` anchors of each
    image are the student's positives."""
    teacher = teacher.eval().requires_grad_(False)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    loss = CrossKDLoss.from_heads(params, adapter_for(teacher), adapter_for(student))
    with torch.no_grad():
        teacher_view = _view(teacher, images, loss.stage_parts)
    student_view = _view(student, images, loss.stage_parts)
    fg_mask = torch.zeros(2, student_view.cls_logits.shape[1], dtype=torch.bool)
    fg_mask[:, :positives] = True
    return loss, loss(student_view, teacher_view, targets_for(fg_mask)), student_view, teacher_view


def test_center_kd_loss_known_value():
    """Σ w BCE(ĉ, σ(c_t)): ĉ = 0 vs σ = 0.75 gives ln 2, ĉ = 2 vs σ = 0.5 gives (softplus(2) + softplus(-2)) / 2; the
    third anchor has weight 0."""
    cross = torch.tensor([0.0, 2.0, 5.0], dtype=torch.float64)
    teacher = torch.tensor([math.log(3.0), 0.0, -1.0], dtype=torch.float64)
    expected = math.log(2.0) + (math.log1p(math.exp(2.0)) + math.log1p(math.exp(-2.0))) / 2  # 1.8200751916
    value = center_kd_loss(cross, teacher, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    assert value.item() == pytest.approx(expected, rel=1e-12) and expected == pytest.approx(1.8200751916, rel=1e-9)


def test_center_kd_gradient_is_the_score_gap_and_zero_at_the_teacher():
    """d/dĉ = σ(ĉ) - σ(c_t): -0.25 at ĉ = 0, σ(c_t) = 0.75; 0 at ĉ = c_t (where the value is the teacher's entropy)."""
    cross = torch.tensor([0.0, 1.3], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([math.log(3.0), 1.3], dtype=torch.float64)
    center_kd_loss(cross, teacher).backward()
    assert cross.grad.tolist() == pytest.approx([-0.25, 0.0], abs=1e-12)


def test_positives_in_layout_maps_cells_between_anchor_layouts():
    """Same k: the mask itself; 9 -> 1: a cell is positive when any of its anchors is; 1 -> 9: all 9 anchors of it."""
    fg = torch.zeros(1, 18, dtype=torch.bool)
    fg[0, 12] = True  # cell 1, its 4th anchor
    assert positives_in_layout(fg, 9, 9) is fg
    assert positives_in_layout(fg, 9, 1).tolist() == [[False, True]]
    assert positives_in_layout(torch.tensor([[False, True]]), 1, 9).tolist() == [[False] * 9 + [True] * 9]


def test_off_by_default_as_in_the_fcos_config():
    """Default ctr_weight 0: FCOS -> FCOS logs crosskd_cls and crosskd_loc only (no centerness KD)."""
    loss, terms, _, _ = _run(tiny_fcos(seed=0), tiny_fcos(seed=1), CrossKDParams(stage=1))
    assert loss.term_names == ("crosskd_cls", "crosskd_loc") and set(terms) == set(loss.term_names)


def test_fcos_twins_cross_centerness_is_the_teachers():
    """Student = teacher: the cross-head centerness equals the teacher's, so crosskd_ctr is the teacher's mean binary
    entropy over the positives (the BCE's minimum) and gives the student no gradient."""
    teacher = tiny_fcos(seed=0)
    student = copy.deepcopy(teacher.eval()).requires_grad_(True)  # eval: the backbone's BatchNorm as the teacher's
    params = CrossKDParams(stage=1, ctr_weight=1.0, aligner_fit=False)  # the paper pairing: identity on twins
    loss, terms, student_view, teacher_view = _run(teacher, student, params)
    cross = loss.cross_head_outputs(student_view, teacher_view)
    assert cross["centerness"].shape == (2, 84)
    assert torch.allclose(cross["centerness"], teacher_view.centerness, atol=1e-5)
    probabilities = teacher_view.centerness[:, :6].sigmoid().double()
    entropy = -(probabilities * probabilities.log() + (1 - probabilities) * (1 - probabilities).log()).mean()
    assert terms["crosskd_ctr"].item() == pytest.approx(entropy.item(), rel=1e-4)
    grads = torch.autograd.grad(terms["crosskd_ctr"], [p for p in student.parameters()], allow_unused=True)
    assert max(float(g.abs().max()) for g in grads if g is not None) < 1e-5


def test_fcos_teacher_to_fcos_student_term_is_positive_with_student_gradient():
    """FCOS -> FCOS at ctr_weight 1: crosskd_ctr finite and > 0, weighted, a gradient on the student's towers before
    the cut and none on the teacher."""
    teacher, student = tiny_fcos(seed=0), tiny_fcos(seed=1)
    loss, terms, _, _ = _run(teacher, student, CrossKDParams(stage=1, ctr_weight=1.0))
    assert loss.term_names == ("crosskd_cls", "crosskd_loc", "crosskd_ctr")
    assert torch.isfinite(terms["crosskd_ctr"]) and terms["crosskd_ctr"] > 0
    _, half, _, _ = _run(teacher, student, CrossKDParams(stage=1, ctr_weight=0.5))
    assert half["crosskd_ctr"].item() == pytest.approx(terms["crosskd_ctr"].item() / 2, rel=1e-5)
    terms["crosskd_ctr"].backward()
    assert student.model[-1].box_tower[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_fcos_teacher_to_yolo_student():
    """FCOS teacher -> YOLOv8n student: the student's features cross into the teacher's box tower and centerness
    predictor (the student needs no centerness branch); crosskd_ctr finite, > 0, with a gradient on the student."""
    student = _yolov8n(seed=1)
    _, terms, _, _ = _run(tiny_fcos(seed=0), student, CrossKDParams(stage=1, ctr_weight=1.0))
    assert set(terms) == {"crosskd_cls", "crosskd_loc", "crosskd_ctr"}
    assert torch.isfinite(terms["crosskd_ctr"]) and terms["crosskd_ctr"] > 0
    terms["crosskd_ctr"].backward()
    assert sum(float(p.grad.abs().sum()) for p in student.parameters() if p.grad is not None) > 0


def test_yolo_teacher_to_fcos_student_refuses_the_centerness_term():
    """YOLO teacher (no centerness) -> FCOS student: ctr_weight > 0 is refused when the loss is built; with the default
    the pair runs with cls and loc terms only (the student's centerness learns from its GT loss)."""
    teacher, student = _yolov8n(seed=0).requires_grad_(False), tiny_fcos(seed=1)
    with pytest.raises(ValueError, match=r"ctr_weight=1.0 .*teacher \(YOLOv8.*\) has no centerness branch"):
        CrossKDLoss.from_heads(CrossKDParams(ctr_weight=1.0), adapter_for(teacher), adapter_for(student))
    _, terms, _, _ = _run(teacher, student, CrossKDParams(stage=1))
    assert set(terms) == {"crosskd_cls", "crosskd_loc"} and all(torch.isfinite(t) for t in terms.values())
