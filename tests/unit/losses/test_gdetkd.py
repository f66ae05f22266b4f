"""G-DetKD: SGFI level weighting and imitation, CKD's InfoNCE and queue, prediction KD, head transfer (SPEC §5)."""

import math

import pytest
import torch
from ultralytics.nn.tasks import DetectionModel

import yolokd.losses.gdetkd as gdetkd
from yolokd.config import ConfigError, load_experiment
from yolokd.heads import adapter_for
from yolokd.losses.gdetkd import (
    GDetKDLoss,
    GDetKDParams,
    ckd_loss,
    semantic_level_weights,
    sgfi_loss,
    transfer_head,
)
from yolokd.losses.gdetkd_rois import ckd_negative_mask
from yolokd.views import HeadSpec, Targets, View

IMAGE = 64  # pixels; levels 8x8, 4x4, 2x2


def _spec(feat_channels, cls_channels=8) -> HeadSpec:
    return HeadSpec(
        "test head", 3, (8.0, 16.0, 32.0), 16, ("one2many",), tuple(feat_channels), {"box": 8, "cls": cls_channels}, 2
    )


def _view(feats, cls_stage, seed=0, requires_grad=False) -> View:
    """A View with the given neck features and cls stage-1 maps; random predicted boxes and logits."""
    generator = torch.Generator().manual_seed(seed)
    batch = feats[0].shape[0]
    anchors = sum(f.shape[2] * f.shape[3] for f in feats)
    corner = torch.rand(batch, anchors, 2, generator=generator) * 40
    boxes = torch.cat((corner, corner + 4 + torch.rand(batch, anchors, 2, generator=generator) * 40), 2)
    feats = [f.clone().requires_grad_(requires_grad) for f in feats]
    stage = [s.clone().requires_grad_(requires_grad) for s in cls_stage]
    return View(
        feats=feats,
        cls_logits=torch.randn(batch, anchors, 3, generator=generator),
        box_output=torch.zeros(batch, anchors, 64),
        boxes=boxes,
        anchors=torch.zeros(anchors, 2),
        strides=torch.ones(anchors, 1),
        reg_max=16,
        stages={"cls": [stage, stage]},
    )


def _features(widths, batch=2, seed=0, cls_channels=8):
    generator = torch.Generator().manual_seed(seed)
    feats = [
        torch.rand(batch, c, IMAGE // s, IMAGE // s, generator=generator)
        for c, s in zip(widths, (8, 16, 32), strict=True)
    ]
    stage = [torch.rand(batch, cls_channels, IMAGE // s, IMAGE // s, generator=generator) for s in (8, 16, 32)]
    return feats, stage


def _targets(batch=2, with_gt=True) -> Targets:
    gt = torch.tensor([[4.0, 4.0, 30.0, 30.0], [20.0, 10.0, 60.0, 62.0]]).repeat(batch, 1, 1)
    gt_mask = torch.full((batch, 2), with_gt)
    return Targets(
        fg_mask=torch.zeros(batch, 84, dtype=torch.bool),
        gt_index=torch.zeros(batch, 84, dtype=torch.long),
        target_boxes=torch.zeros(batch, 84, 4),
        gt_boxes=gt * gt_mask[..., None],
        gt_labels=torch.zeros(batch, 2, dtype=torch.long),
        gt_mask=gt_mask,
        image_size=torch.tensor([float(IMAGE), float(IMAGE)]),
    )


def _loss(student_widths=(4, 8, 16), teacher_widths=(8, 16, 32), **params) -> GDetKDLoss:
    torch.manual_seed(0)
    return GDetKDLoss(GDetKDParams(**params), _spec(teacher_widths), _spec(student_widths))


def _run(loss, student_widths=(4, 8, 16), teacher_widths=(8, 16, 32), seed=0, with_gt=True, requires_grad=True):
    """(terms, student view, teacher view) on random features, RoI sampling seeded."""
    student = _view(*_features(student_widths, seed=seed), requires_grad=requires_grad)
    teacher = _view(*_features(teacher_widths, seed=seed + 1))
    torch.manual_seed(seed)
    return loss(student, teacher, _targets(with_gt=with_gt)), student, teacher


def test_level_weights_sum_to_one_per_roi():
    """α = softmax over levels: non-negative and summing to 1 for every RoI."""
    weights = semantic_level_weights(torch.randn(7, 3, 5), torch.randn(7, 5), torch.tensor(0.7))
    assert weights.shape == (7, 3) and (weights >= 0).all()
    assert torch.allclose(weights.sum(1), torch.ones(7))


def test_sgfi_loss_is_the_mse_of_the_weighted_sum():
    """Hand-made: α = (0.25, 0.75) of maps 0 and 4 against a teacher of 1: (3 - 1)² = 4."""
    adapted = torch.stack((torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), 4.0)), 1)
    assert sgfi_loss(adapted, torch.ones(1, 2, 2, 2), torch.tensor([[0.25, 0.75]])).tolist() == [4.0]


def test_sgfi_reaches_zero_for_identical_features_and_identity_adapters():
    """Student == teacher, identity same-level and zero cross-level adapters, small τ: α picks the own level, L ≈ 0."""
    widths = (4, 8, 16)
    loss = _loss(widths, widths, ckd_weight=0.0)
    with torch.no_grad():
        for target, adapters in enumerate(loss.adapt):
            for source, adapt in enumerate(adapters):
                adapt.bias.zero_()
                adapt.weight.copy_(torch.eye(widths[target])[..., None, None] if source == target else 0.0)
        for embed in loss.embed:  # non-negative weights, no bias: positive keys from positive features, 0 from 0
            for conv in (embed[0], embed[2]):
                conv.weight.abs_()
                conv.bias.zero_()
        loss.log_temperature.fill_(math.log(1e-4))
    feats, stage = _features(widths)
    terms = loss(_view(feats, stage), _view(feats, stage), _targets())
    assert terms["gdetkd_sgfi"].item() < 1e-8


def test_temperature_is_a_trained_parameter():
    """τ gets a gradient from the SGFI term and changes after one optimiser step; it stays positive."""
    loss = _loss(ckd_weight=0.0)
    before = loss.temperature.item()
    assert before == pytest.approx(math.sqrt(32))
    optimizer = torch.optim.SGD(loss.parameters(), lr=1.0)
    terms, _, _ = _run(loss)
    terms["gdetkd_sgfi"].backward()
    assert loss.log_temperature.grad is not None and loss.log_temperature.grad.abs().item() > 0
    optimizer.step()
    assert loss.temperature.item() != before and loss.temperature.item() > 0


def test_every_term_reaches_the_student_never_the_teacher():
    """SGFI and CKD each send non-zero gradient to the student's features; teacher tensors get none."""
    for term, tensors in (("gdetkd_sgfi", "feats"), ("gdetkd_ckd", "stages")):
        loss = _loss()
        student = _view(*_features((4, 8, 16)), requires_grad=True)
        teacher = _view(*_features((8, 16, 32), seed=1), requires_grad=True)
        loss(student, teacher, _targets())[term].backward()
        student_leaves = student.feats if tensors == "feats" else student.stages["cls"][1]
        assert any(t.grad is not None and t.grad.abs().sum() > 0 for t in student_leaves), term
        teacher_leaves = teacher.feats + teacher.stages["cls"][1]
        assert all(t.grad is None for t in teacher_leaves), term


def _naive_info_nce(student, teacher, queue, mask, gamma):
    """Loop oracle of eq. 2: -log g(i,i) / (g(i,i) + Σ_{j negative} g(i,j))."""
    keys = torch.cat((teacher, queue))

    def critic(i, j):
        return torch.exp(torch.dot(student[i], keys[j]) / (student[i].norm() * keys[j].norm()) / gamma)

    losses = []
    for i in range(len(student)):
        denominator = critic(i, i) + sum(critic(i, j) for j in range(len(keys)) if j != i and mask[i, j])
        losses.append(-torch.log(critic(i, i) / denominator))
    return torch.stack(losses)


def test_ckd_matches_a_naive_info_nce_loop():
    """Vectorised InfoNCE == the loop oracle on 5 RoIs and a queue of 3, with some negatives masked out."""
    generator = torch.Generator().manual_seed(0)
    student, teacher = (
        torch.randn(5, 4, generator=generator, dtype=torch.float64),
        torch.randn(5, 4, generator=generator, dtype=torch.float64),
    )
    queue = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    mask = torch.rand(5, 8, generator=generator) > 0.4
    expected = _naive_info_nce(student, teacher, queue, mask, 0.5)
    assert torch.allclose(ckd_loss(student, teacher, queue, mask, 0.5), expected)


def test_ckd_ignores_overlapping_negatives():
    """Changing the teacher embedding of a same-image RoI with IoU > 0.5 leaves RoI 0's loss unchanged."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 10.0, 4.0]])
    mask = ckd_negative_mask(boxes, torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.bool), 0.5)
    student, teacher = torch.randn(3, 4), torch.randn(3, 4)
    moved = teacher.clone()
    moved[1] = torch.randn(4)  # overlaps RoI 0 by 0.6: not a negative
    no_queue = torch.zeros(0, 4)
    assert ckd_loss(student, moved, no_queue, mask, 0.1)[0] == ckd_loss(student, teacher, no_queue, mask, 0.1)[0]
    moved[2] = torch.randn(4)  # overlaps by 0.4: a negative
    assert ckd_loss(student, moved, no_queue, mask, 0.1)[0] != ckd_loss(student, teacher, no_queue, mask, 0.1)[0]


def test_queue_fills_during_training_only():
    """A training step enqueues its valid RoIs' teacher representations; an eval step enqueues nothing."""
    loss = _loss(queue_size=40)
    _run(loss)
    assert loss.queue.valid.sum().item() == 32 and loss.queue.pointer.item() == 32  # 2 images x 16 RoIs
    loss.eval()
    _run(loss, seed=1)
    assert loss.queue.pointer.item() == 32
    loss.train()
    _run(loss, seed=2)
    assert loss.queue.pointer.item() == 24 and loss.queue.valid.all()  # wrapped: 64 % 40


def test_queue_and_trained_parts_survive_a_state_dict_round_trip():
    """A fresh module loaded from state_dict() has the same queue and gives the same terms on the same batch."""
    loss = _loss(queue_size=50)
    for seed in range(3):
        _run(loss, seed=seed)
    state = loss.state_dict()
    assert {"queue.representations", "queue.valid", "queue.pointer", "log_temperature"} <= set(state)
    restored = _loss(queue_size=50)
    restored.load_state_dict(state)
    loss.eval()
    restored.eval()
    expected, _, _ = _run(loss, seed=5)
    actual, _, _ = _run(restored, seed=5)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_batches_without_gt_stay_finite():
    """No GT anywhere: negatives only, both terms finite and the student still gets a gradient."""
    terms, student, _ = _run(_loss(), with_gt=False)
    assert all(torch.isfinite(t) and t > 0 for t in terms.values())
    sum(terms.values()).backward()
    assert student.feats[0].grad.abs().sum() > 0


def test_prediction_kd_is_off_by_default_and_logged_when_on():
    """pred_weight=0 logs sgfi and ckd only; pred_weight > 0 adds gdetkd_pred = weight * BCKD cls / N_pos."""
    assert _loss().term_names == ("gdetkd_sgfi", "gdetkd_ckd")
    terms, student, teacher = _run(_loss(pred_weight=2.0))
    assert set(terms) == {"gdetkd_sgfi", "gdetkd_ckd", "gdetkd_pred"}
    expected = 2.0 * gdetkd.bckd_cls_loss(student.cls_logits.reshape(-1, 3), teacher.cls_logits.reshape(-1, 3))
    assert terms["gdetkd_pred"].item() == pytest.approx(expected.item())


def test_ckd_off_needs_no_stage_hooks():
    """ckd_weight=0 asks for no head stage outputs (and logs a zero ckd term)."""
    loss = _loss(ckd_weight=0.0)
    assert loss.stage_parts == () and _loss().stage_parts == ("cls",)


def test_equal_cls_widths_share_the_projection_directly():
    """Same cls width: no student aligner, the projection is literally shared; otherwise a Linear aligner."""
    same = GDetKDLoss(GDetKDParams(), _spec((8, 16, 32), 8), _spec((4, 8, 16), 8))
    different = GDetKDLoss(GDetKDParams(), _spec((8, 16, 32), 8), _spec((4, 8, 16), 4))
    assert isinstance(same.ckd_aligner, torch.nn.Identity) and isinstance(different.ckd_aligner, torch.nn.Linear)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("sgfi_weight", -1.0),
        ("rois_per_image", 0),
        ("positive_iou", 1.5),
        ("queue_size", -1),
        ("temperature_init", 0.0),
    ],
)
def test_bad_parameters_rejected(key, value):
    """Out-of-range parameters raise a ValueError naming the key."""
    with pytest.raises(ValueError, match=key):
        GDetKDParams(**{key: value})


def test_config_entry_validates_against_the_params():
    """A gdetkd entry loads from a config; a misspelt key suggests the right one."""
    config = {
        "model": "yolov8n.yaml",
        "teacher": "t.pt",
        "distill": [{"loss": "gdetkd", "init_head_from_teacher": True}],
    }
    assert load_experiment(config).distill[0].params.init_head_from_teacher is True
    config["distill"][0]["rois_per_img"] = 8
    with pytest.raises(ConfigError, match="did you mean 'rois_per_image'"):
        load_experiment(config)


def _adapter(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return adapter_for(DetectionModel(name, nc=3, verbose=False))


def test_head_transfer_copies_matching_tensors_only():
    """YOLOv8s -> YOLOv8n: tensors of equal name and shape are copied, the others keep the student's values."""
    teacher, student = _adapter("yolov8s.yaml", 0), _adapter("yolov8n.yaml", 1)
    before = {k: v.clone() for k, v in student.head_state().items()}
    transfer = transfer_head(teacher.head_state(), student.head_state())
    assert transfer.copied and transfer.skipped
    assert "cv2.0.1.conv.weight" in transfer.copied and any(
        s.startswith("cv2.0.0.conv.weight (") for s in transfer.skipped
    )
    teacher_state, student_state = teacher.head.state_dict(), student.head.state_dict()  # the models' own tensors
    assert all(torch.equal(student_state[k], teacher_state[k]) for k in transfer.copied)
    kept = [s.split(" (")[0] for s in transfer.skipped]
    assert all(torch.equal(student_state[k], before[k]) for k in kept)
    assert len(transfer.copied) + len(kept) == len(student_state)


def test_head_transfer_between_identical_architectures_copies_everything():
    """Same architecture: every head tensor (parameters and BatchNorm buffers) is copied."""
    teacher, student = _adapter("yolov8n.yaml", 0), _adapter("yolov8n.yaml", 1)
    transfer = transfer_head(teacher.head_state(), student.head_state())
    assert not transfer.skipped and len(transfer.copied) == len(student.head_state())
    teacher_state, student_state = teacher.head_state(), student.head_state()
    assert all(torch.equal(student_state[name], teacher_state[name]) for name in student_state)


def test_init_student_runs_only_when_asked_and_logs(monkeypatch):
    """init_head_from_teacher=false does nothing; true copies and logs the copied and kept tensor names."""
    teacher, student = _adapter("yolov8s.yaml"), _adapter("yolov8n.yaml")
    messages = []
    monkeypatch.setattr(gdetkd.LOGGER, "info", messages.append)
    assert GDetKDLoss.from_heads(GDetKDParams(), teacher, student).init_student(teacher, student) is None
    assert messages == []
    loss = GDetKDLoss.from_heads(GDetKDParams(init_head_from_teacher=True), teacher, student)
    transfer = loss.init_student(teacher, student)
    (message,) = messages
    assert f"copied {len(transfer.copied)} teacher head tensors" in message and "cv2.0.1.conv.weight" in message
    assert f"kept {len(transfer.skipped)} student tensors" in message


def test_head_transfer_across_families_warns(monkeypatch):
    """YOLO11s -> YOLOv8n head transfer still runs (by name and shape) but warns that the heads differ."""
    teacher, student = _adapter("yolo11s.yaml"), _adapter("yolov8n.yaml")
    warnings = []
    monkeypatch.setattr(gdetkd.LOGGER, "info", lambda message: None)
    monkeypatch.setattr(gdetkd.LOGGER, "warning", warnings.append)
    GDetKDLoss.from_heads(GDetKDParams(init_head_from_teacher=True), teacher, student).init_student(teacher, student)
    (warning,) = warnings
    assert "different head families" in warning and "YOLO11" in warning
