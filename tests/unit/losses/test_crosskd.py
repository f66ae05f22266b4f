"""CrossKD on real (untrained) YOLO heads and on moment alignment (SPEC §2, §8)."""

import copy

import pytest
import torch
from loss_inputs import targets_for
from ultralytics.nn.tasks import DetectionModel

from yolokd.config import ConfigError, load_experiment
from yolokd.heads import StageRecorder, adapter_for
from yolokd.losses.crosskd import CrossKDLoss, CrossKDParams, moment_align
from yolokd.views import HeadSpec, Targets, View

BRANCH = "one2many"


def _model(name: str, seed: int) -> DetectionModel:
    """An untrained model in eval mode whose BatchNorm statistics come from one random batch.

    With the initial running statistics (mean 0, var 1), activations of an untrained model shrink layer by layer
    and its head outputs are nearly constant; calibrated statistics keep every feature O(1).
    """
    torch.manual_seed(seed)
    model = DetectionModel(name, nc=3, verbose=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 64, 64))
    return model.eval()


def _frozen(model: DetectionModel) -> DetectionModel:
    return model.requires_grad_(False)


def _view(model: DetectionModel, images: torch.Tensor, parts: tuple[str, ...]) -> View:
    """Eval-mode forward under raw_outputs, with the loss's stage points recorded."""
    adapter = adapter_for(model)
    recorder = StageRecorder(adapter, (BRANCH,), parts)
    with adapter.raw_outputs(), recorder.recording():
        raw = adapter.split_branches(model(images))[BRANCH]
        return adapter.build_view(raw, recorder.stages(BRANCH))


def _targets(view: View) -> Targets:
    batch, anchors, _ = view.cls_logits.shape
    fg_mask = torch.zeros(batch, anchors, dtype=torch.bool)
    fg_mask[:, :4] = True
    return targets_for(fg_mask)


def _loss_and_views(teacher, student, stage: int, images=None, aligner_fit: bool = False):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) if images is None else images
    params = CrossKDParams(stage=stage, aligner_fit=aligner_fit)
    loss = CrossKDLoss.from_heads(params, adapter_for(teacher), adapter_for(student))
    with torch.no_grad():
        teacher_view = _view(teacher, images, loss.stage_parts)
    return loss, _view(student, images, loss.stage_parts), teacher_view


@pytest.fixture(scope="module")
def teacher():
    """A frozen YOLOv8n stand-in teacher (nc=3)."""
    return _frozen(_model("yolov8n.yaml", seed=0))


def test_moment_align_gives_teacher_moments():
    """The aligned feature has the teacher's per-channel mean and (population) std over B·H·W."""
    student = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    teacher = torch.randn(2, 3, 4, 5, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2
    std, mean = torch.std_mean(moment_align(student, teacher), dim=(0, 2, 3), correction=0)
    teacher_std, teacher_mean = torch.std_mean(teacher, dim=(0, 2, 3), correction=0)
    assert torch.allclose(mean, teacher_mean) and torch.allclose(std, teacher_std, rtol=1e-5)


def test_moment_align_invariant_to_positive_affine_change():
    """a * h + b with a > 0 per channel aligns to the same tensor as h."""
    student, teacher = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    scale, shift = torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1), torch.tensor([1.0, -3.0, 0.2]).view(1, 3, 1, 1)
    assert torch.allclose(moment_align(scale * student + shift, teacher), moment_align(student, teacher), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "stage"), [("yolov8n.yaml", 0), ("yolov8n.yaml", 1), ("yolov8n.yaml", 2), ("yolo11n.yaml", 1)]
)
def test_identical_teacher_and_student_give_zero_loss(name, stage):
    """Same weights and architecture: the cross-head pass reproduces the teacher, both terms ~0."""
    teacher = _frozen(_model(name, seed=0))
    student = copy.deepcopy(teacher).requires_grad_(True)
    loss, student_view, teacher_view = _loss_and_views(teacher, student, stage)
    terms = loss(student_view, teacher_view, _targets(student_view))
    assert set(terms) == {"crosskd_cls", "crosskd_loc"}
    assert all(abs(term.item()) < 1e-5 for term in terms.values()), terms


def test_identical_direct_regression_heads_reproduce_teacher_outputs():
    """YOLO26 twins (reg_max=1): cross-head logits and ltrb equal the teacher's, so the cls term is ~0.

    The GIoU term is not asserted: an untrained YOLO26 predicts negative ltrb, i.e. degenerate boxes, whose GIoU
    with themselves is not 1.
    """
    teacher = _frozen(_model("yolo26n.yaml", seed=0))
    loss, student_view, teacher_view = _loss_and_views(teacher, copy.deepcopy(teacher).requires_grad_(True), 1)
    cross = loss.cross_head_outputs(student_view, teacher_view)
    assert torch.allclose(cross["box"], teacher_view.box_output, atol=1e-3)
    assert torch.allclose(cross["cls"], teacher_view.cls_logits, atol=1e-3)
    assert loss(student_view, teacher_view, _targets(student_view))["crosskd_cls"].item() < 1e-5


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_each_stage_runs_and_gives_positive_terms(teacher, stage):
    """Every cut point runs on a different student; both terms are finite and > 0."""
    loss, student_view, teacher_view = _loss_and_views(teacher, _model("yolov8n.yaml", seed=1), stage)
    terms = loss(student_view, teacher_view, _targets(student_view))
    assert all(torch.isfinite(term) and term > 0 for term in terms.values()), terms


def test_teacher_parameters_never_get_grad(teacher):
    """Backward through the cross-head pass leaves every teacher parameter without .grad."""
    loss, student_view, teacher_view = _loss_and_views(teacher, _model("yolov8n.yaml", seed=1), 1)
    sum(loss(student_view, teacher_view, _targets(student_view)).values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_student_gets_grad_before_the_cut_only(teacher, stage):
    """Head stages before the cut (and the neck) get KD gradient; stages after it and the predictors get none."""
    student = _model("yolov8n.yaml", seed=1)
    loss, student_view, teacher_view = _loss_and_views(teacher, student, stage)
    sum(loss(student_view, teacher_view, _targets(student_view)).values()).backward()
    adapter = adapter_for(student)
    for part in ("box", "cls"):
        for tower in adapter.branch_modules(BRANCH, part):
            for index, module in enumerate(tower):
                grads = [p.grad for p in module.parameters()]
                if index < stage:
                    assert all(g is not None and g.abs().sum() > 0 for g in grads), (part, index)
                else:
                    assert all(g is None for g in grads), (part, index)
    neck = student.model[-2]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in neck.parameters())


@pytest.mark.parametrize(("term", "part"), [("crosskd_cls", "cls"), ("crosskd_loc", "box")])
def test_gradient_reaches_student_features_through_teacher_tail(teacher, term, part):
    """Each term sends a non-zero gradient through the teacher's tower of its own part into the student's cut."""
    loss, student_view, teacher_view = _loss_and_views(teacher, _model("yolov8n.yaml", seed=1), 1)
    leaves = {
        key: [[t.detach().requires_grad_(True) for t in stage] for stage in v] for key, v in student_view.stages.items()
    }
    student_view.stages = leaves
    loss(student_view, teacher_view, _targets(student_view))[term].backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in leaves[f"{part}_preact"][0])
    other = "box" if part == "cls" else "cls"
    assert all(t.grad is None for t in leaves[f"{other}_preact"][0])


def test_invariant_to_positive_affine_change_of_student_stage(teacher):
    """Scaling (a > 0) and shifting the student's stage-0 pre-activation per channel leaves both terms unchanged."""
    loss, student_view, teacher_view = _loss_and_views(teacher, _model("yolov8n.yaml", seed=1), 1)
    targets = _targets(student_view)
    before = loss(student_view, teacher_view, targets)
    generator = torch.Generator().manual_seed(3)
    for key in ("box_preact", "cls_preact"):
        width = student_view.stages[key][0][0].shape[1]
        scale = torch.rand(1, width, 1, 1, generator=generator) * 4 + 0.1
        shift = torch.randn(1, width, 1, 1, generator=generator) * 3
        student_view.stages[key][0] = [scale * t + shift for t in student_view.stages[key][0]]
    after = loss(student_view, teacher_view, targets)
    for name, value in before.items():
        assert after[name].item() == pytest.approx(value.item(), rel=1e-3), name


@pytest.mark.parametrize(("stage", "preactivation"), [(0, False), (1, True), (2, False)])
def test_run_tail_reproduces_the_heads_own_outputs(stage, preactivation):
    """The adapter's run_tail from each stage, on the model's own recorded input, equals its forward outputs."""
    model = _frozen(_model("yolo11n.yaml", seed=0))
    parts = ("box_preact", "cls_preact") if preactivation else ("box", "cls")
    view = _view(model, torch.rand(1, 3, 64, 64), parts)
    adapter = adapter_for(model)
    for part, output in (("box", view.box_output), ("cls", view.cls_logits)):
        inputs = view.feats if stage == 0 else view.stages[part + ("_preact" if preactivation else "")][stage - 1]
        tail = [adapter.run_tail(BRANCH, part, lv, stage, x, preactivation).flatten(2) for lv, x in enumerate(inputs)]
        assert torch.allclose(torch.cat(tail, 2).transpose(1, 2), output, atol=1e-5), part


@pytest.mark.parametrize("aligner_fit", [False, True])
def test_half_precision_teacher_runs_and_returns_fp32(teacher, aligner_fit):
    """An fp16 teacher (CUDA + AMP storage) with an fp32 student: fp32 terms close to the fp32 teacher's."""
    student = _model("yolov8n.yaml", seed=1)
    loss, student_view, teacher_view = _loss_and_views(teacher, student, 1, aligner_fit=aligner_fit)
    reference = loss(student_view, teacher_view, _targets(student_view))
    half_teacher = copy.deepcopy(teacher).half()
    params = CrossKDParams(aligner_fit=aligner_fit)
    half_loss = CrossKDLoss.from_heads(params, adapter_for(half_teacher), adapter_for(student))
    with torch.no_grad():
        half_view = _view(
            half_teacher,
            torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).half(),
            half_loss.stage_parts,
        )
    terms = half_loss(student_view, half_view, _targets(student_view))
    sum(terms.values()).backward()
    tolerance = 0.15 if aligner_fit else 0.05  # the fit itself reads the fp16 teacher's features
    for name, value in terms.items():
        assert value.dtype == torch.float32 and value.item() == pytest.approx(reference[name].item(), rel=tolerance)
    assert student.model[-1].cv2[0][0].conv.weight.grad.abs().sum() > 0


def test_teacher_recording_ends_before_the_tail_pass(teacher):
    """The teacher's stages are recorded inside its forward only: no hook is left for run_tail to fire."""
    adapter = adapter_for(teacher)
    recorder = StageRecorder(adapter, (BRANCH,), ("box", "cls", "box_preact", "cls_preact"))
    with torch.no_grad(), adapter.raw_outputs(), recorder.recording():
        teacher(torch.rand(1, 3, 64, 64))
        recorded = recorder.stages(BRANCH)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in teacher.modules())
    adapter.run_tail(BRANCH, "box", 0, 0, torch.randn(1, 64, 8, 8, requires_grad=True))
    assert not recorder.store and not any(t.requires_grad for t in recorded["box"][1])


def test_stage_out_of_range_is_a_clear_error():
    """stage=5 is a ValueError listing the valid stages; in a config it is a ConfigError at distill.0.stage."""
    with pytest.raises(ValueError, match=r"stage=5 is out of range: valid stages are 0, 1, 2, 3, 4"):
        CrossKDParams(stage=5)
    config = {
        "model": "yolov8n.yaml",
        "data": "coco.yaml",
        "teacher": "t.pt",
        "distill": [{"loss": "crosskd", "stage": 5}],
    }
    with pytest.raises(ConfigError, match=r"distill\.0\.stage: stage=5 is out of range"):
        load_experiment(config)


def test_stage0_on_one2one_branch_is_refused():
    """Ultralytics detaches the one2one head's inputs: stage 0 there would only train the aligner, so it is refused."""
    with pytest.raises(ValueError, match="stage=0 cannot distil the one2one branch"):
        CrossKDParams(stage=0, branch="one2one")


def test_from_heads_hands_crosskd_the_teacher_adapter():
    """The Distiller's entry point gives CrossKD the teacher's adapter (its tail runs through it); specs stay data."""
    teacher, student = adapter_for(_model("yolov8s.yaml", 0)), adapter_for(_model("yolov8n.yaml", 1))
    loss = CrossKDLoss.from_heads(CrossKDParams(), teacher, student)
    assert loss.teacher_adapter is teacher
    assert not any(isinstance(value, torch.nn.Module) for value in vars(teacher.spec).values())


def test_a_head_without_the_cut_stage_is_refused():
    """stage=2 needs two head stages before the predictor: a head with one is a ValueError naming both counts."""
    spec = adapter_for(_model("yolov8n.yaml", 0)).spec
    one_stage = HeadSpec(
        "one-stage head", 3, spec.strides, 16, ("one2many",), spec.feat_channels, {"box": 64, "cls": 80}, 1
    )
    with pytest.raises(ValueError, match=r"stage=2 needs 2 head stages .* the teacher \(one-stage head\) has 1"):
        CrossKDLoss(CrossKDParams(stage=2), one_stage, spec, teacher_adapter=None)


def test_different_widths_get_trainable_aligners():
    """A YOLO11s teacher for a YOLOv8n student: 1x1 aligners map the student's cut widths to the teacher's."""
    teacher, student = adapter_for(_model("yolo11s.yaml", seed=0)), adapter_for(_model("yolov8n.yaml", seed=1))
    loss = CrossKDLoss.from_heads(CrossKDParams(aligner_fit=False), teacher, student)
    cls_conv = loss.aligners["cls"].convs[0]
    assert (cls_conv.in_channels, cls_conv.out_channels) == (64, 128)
    assert isinstance(loss.aligners["box"].convs[0], torch.nn.Identity)  # 64 -> 64
    fitted = CrossKDLoss.from_heads(CrossKDParams(aligner_fit=True), teacher, student)
    assert all(isinstance(fitted.aligners[part].convs[0], torch.nn.Conv2d) for part in ("box", "cls"))


def _permute_stage0(model: DetectionModel, seed: int = 1) -> DetectionModel:
    """The same function with the channels of every tower's stage 0 in another order (a student whose head basis is
    not the teacher's, as for two models trained apart): stage 0's outputs and stage 1's inputs permuted together."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    head = model.model[-1]
    with torch.no_grad():
        for tower in (*head.cv2, *head.cv3):
            first, second = tower[0], tower[1]
            order = torch.randperm(first.conv.out_channels, generator=generator)
            first.conv.weight.copy_(first.conv.weight[order])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(first.bn, name).copy_(getattr(first.bn, name)[order])
            second.conv.weight.copy_(second.conv.weight[:, order])
    return model.requires_grad_(True)


def test_fitted_aligner_finds_the_students_basis():
    """A student computing the teacher's function in a permuted stage-0 basis: the paper's identity pairing gives large
    KD terms (it asks the student to rebuild its basis); the fitted aligner recovers the permutation, terms ~0."""
    teacher = _frozen(_model("yolov8n.yaml", seed=0))
    student = _permute_stage0(teacher)
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    terms = {}
    for fit in (False, True):
        loss, student_view, teacher_view = _loss_and_views(teacher, student, 1, images, aligner_fit=fit)
        terms[fit] = loss(student_view, teacher_view, _targets(student_view))
    assert all(terms[False][name] > 0.05 for name in terms[False]), terms
    assert all(terms[True][name] < 0.01 * terms[False][name] for name in terms[True]), terms


def test_negative_ltrb_of_direct_regression_heads_is_clamped():
    """reg_max=1: a cross-head prediction with negative ltrb (a flipped box) decodes to a point; 1 - GIoU is then 1."""
    adapter = adapter_for(DetectionModel("yolo26n.yaml", nc=3, verbose=False))
    loss = CrossKDLoss.from_heads(CrossKDParams(), adapter, adapter)
    anchors = 3
    teacher_view = View(
        feats=[torch.zeros(1, 64, 1, anchors)],
        cls_logits=torch.full((1, anchors, 3), 50.0),  # w_a = σ(50) = 1
        box_output=torch.ones(1, anchors, 4),  # a 2x2 box around each anchor
        boxes=torch.zeros(1, anchors, 4),
        anchors=torch.tensor([[0.5, 0.5], [1.5, 0.5], [2.5, 0.5]]),
        strides=torch.full((anchors, 1), 8.0),
        reg_max=1,
    )
    cross_box = torch.full((1, anchors, 4), -5.0, requires_grad=True)
    loss.cross_head_outputs = lambda student, teacher: {"box": cross_box, "cls": teacher.cls_logits.clone()}
    terms = loss(teacher_view, teacher_view, _targets(teacher_view))  # N_pos = 3
    assert terms["crosskd_loc"].item() == pytest.approx(4.0 * anchors * 1.0 / 3, rel=1e-5)  # loc_weight Σ w (1-GIoU)
