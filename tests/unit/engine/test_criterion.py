"""DistillationCriterion: its GT part is the student's own Ultralytics loss; KD terms are added as documented."""

from __future__ import annotations

import math

import pytest
import torch
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import DetectionModel, OBBModel, PoseModel, SegmentationModel
from ultralytics.utils.loss import E2ELoss, v8DetectionLoss, v8OBBLoss, v8PoseLoss, v8SegmentationLoss

from yolokd.engine.criterion import DistillationCriterion, student_loss_and_targets
from yolokd.heads import StageRecorder

STUDENTS = [("yolov8n.yaml", v8DetectionLoss), ("yolo26n.yaml", E2ELoss), ("yolov8n-seg.yaml", v8SegmentationLoss)]
STUDENT_IDS = ["v8DetectionLoss", "E2ELoss", "v8SegmentationLoss"]
ALL_STUDENTS = [
    *STUDENTS,
    ("yolov8n-pose.yaml", v8PoseLoss),
    ("yolov8n-obb.yaml", v8OBBLoss),
    ("yolo26n-seg.yaml", E2ELoss),  # of SegmentLoss26 (mask-aware assigner, semantic loss)
    ("yolo26n-pose.yaml", E2ELoss),  # of PoseLoss26 (keypoint-aware assigner, RLE loss)
    ("yolo26n-obb.yaml", E2ELoss),  # of v8OBBLoss on raw angles
]
ALL_IDS = [*STUDENT_IDS, "v8PoseLoss", "v8OBBLoss", "E2E-SegmentLoss26", "E2E-PoseLoss26", "E2E-v8OBBLoss"]
ROTATIONS = torch.tensor([[0.3], [0.0], [1.2]])  # radians, for OBB batches (Ultralytics' xywhr labels)


class StubDistiller:
    """Fixed KD terms (one per branch) and a record of whether the teacher would have run."""

    device = torch.device("cpu")
    branches = ("one2many",)

    def __init__(self, terms: dict[str, float]) -> None:
        self.terms = terms
        self.term_names = tuple(terms)
        self.calls = 0

    def term_branches(self) -> dict[str, str]:
        return dict.fromkeys(self.term_names, "one2many")

    def recorder_for(self, adapter):
        return StageRecorder(adapter, (), ())

    def __call__(self, student_views, images, targets):
        self.calls += 1
        return {name: torch.tensor(value) for name, value in self.terms.items()}


def make_student(model_yaml: str) -> DetectionModel:
    torch.manual_seed(0)
    if "-pose" in model_yaml:  # 4 keypoints (x, y, visibility), as the synthetic set's
        model = PoseModel(model_yaml, nc=3, data_kpt_shape=(4, 3), verbose=False).train()
    else:
        model_class = (
            SegmentationModel if "-seg" in model_yaml else OBBModel if "-obb" in model_yaml else DetectionModel
        )
        model = model_class(model_yaml, nc=3, verbose=False).train()
    model.args = get_cfg(overrides={"epochs": 10})  # loss gains and the E2E decay horizon Ultralytics reads
    return model


def make_obb_batch() -> dict[str, torch.Tensor]:
    """make_batch with rotated boxes: the same centres and sizes, turned by ROTATIONS (normalised xywhr)."""
    batch = make_batch()
    batch["bboxes"] = torch.cat((batch["bboxes"], ROTATIONS), 1)
    return batch


def batch_for(model_yaml: str) -> dict[str, torch.Tensor]:
    return make_obb_batch() if "-obb" in model_yaml else make_batch()


def make_batch(batch_size: int = 3) -> dict[str, torch.Tensor]:
    """Three images at 64 px: two GT boxes in the first, one in the second, none in the third (normalised xywh)."""
    torch.manual_seed(1)
    batch = {
        "img": torch.rand(batch_size, 3, 64, 64),
        "batch_idx": torch.tensor([0.0, 0.0, 1.0]),
        "cls": torch.tensor([[1.0], [0.0], [2.0]]),
        "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.3, 0.3, 0.2], [0.3, 0.3, 0.2, 0.2]]),
    }
    # Instance masks at 1/4 resolution in Ultralytics' overlap format: pixel = 1-based instance index in its image.
    masks = torch.zeros(batch_size, 16, 16)
    for image, index, (cx, cy, w, h) in ((0, 1, (8, 8, 6, 6)), (0, 2, (5, 5, 4, 3)), (1, 1, (5, 5, 3, 3))):
        masks[image, cy - h // 2 : cy + h // 2, cx - w // 2 : cx + w // 2] = index
    batch["masks"] = masks
    # YOLO26-seg's semantic target at the same resolution: the class of the instance at each pixel (0 elsewhere).
    classes = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])[:batch_size]
    batch["sem_masks"] = classes.gather(1, masks.long().flatten(1)).view(masks.shape)
    # 4 keypoints per object (normalised x, y, visibility); the second object's last keypoint is not visible.
    corners = batch["bboxes"][:, None, :2] + torch.tensor([[-0.1, 0.0], [0.0, -0.1], [0.1, 0.0], [0.0, 0.1]])
    visible = torch.tensor([[2.0] * 4, [2.0, 2.0, 2.0, 0.0], [2.0] * 4])[..., None]
    batch["keypoints"] = torch.cat((corners, visible), -1)
    return batch


@pytest.mark.parametrize(("model_yaml", "loss_type"), ALL_STUDENTS, ids=ALL_IDS)
def test_gt_part_equals_the_students_own_loss(model_yaml, loss_type):
    """Loss vector, logged items and gradients equal ``base(preds, batch)`` exactly, also after E2ELoss' o2m weight
    decays: the criterion calls the student's own loss, it does not re-implement its weighting."""
    model, batch = make_student(model_yaml), batch_for(model_yaml)
    base = model.init_criterion()
    assert type(base) is loss_type
    preds = model(batch["img"])
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(2):
        expected, expected_items = base(preds, batch)
        loss, items, _ = student_loss_and_targets(base, preds, batch)
        assert torch.equal(loss, expected)
        assert items.keys() == expected_items.keys()
        assert all(torch.equal(value, expected_items[name]) for name, value in items.items())
        ours = torch.autograd.grad(loss.sum(), params, retain_graph=True, allow_unused=True)
        theirs = torch.autograd.grad(expected.sum(), params, retain_graph=True, allow_unused=True)
        for mine, reference in zip(ours, theirs, strict=True):
            assert (mine is None) == (reference is None)
            assert mine is None or torch.equal(mine, reference)
        DistillationCriterion(base, model, StubDistiller({})).update()  # E2ELoss: o2m 0.8 -> 0.72; v8: nothing


@pytest.mark.parametrize(("model_yaml", "loss_type"), STUDENTS, ids=STUDENT_IDS)
def test_targets_are_the_assignment_the_loss_computed(model_yaml, loss_type):
    """Each branch's Targets hold the fg mask, matched GT index and target boxes of that branch's own assigner call,
    and the padded GT it was given (pixels, xyxy); the one2one branch has its own (top-1) assignment."""
    model, batch = make_student(model_yaml), make_batch()
    base = model.init_criterion()
    preds = model(batch["img"])
    _, _, targets = student_loss_and_targets(base, preds, batch)
    branches = {"one2many": base.one2many, "one2one": base.one2one} if loss_type is E2ELoss else {"one2many": base}
    assert targets.keys() == branches.keys()
    for branch, loss in branches.items():
        raw = preds[branch] if loss_type is E2ELoss else preds
        (fg_mask, gt_index, target_boxes, _, _), _, _ = loss.get_assigned_targets_and_loss(raw, batch)
        got = targets[branch]
        assert torch.equal(got.fg_mask, fg_mask.bool()) and got.fg_mask.any()
        assert torch.equal(got.gt_index[fg_mask], gt_index[fg_mask]) and torch.equal(got.target_boxes, target_boxes)
        assert got.gt_mask.tolist() == [[True, True], [True, False], [False, False]]
        torch.testing.assert_close(got.gt_boxes[0, 0], torch.tensor([19.2, 19.2, 44.8, 44.8]))  # xywh 0.5 0.5 0.4 0.4
        assert got.gt_labels[0].tolist() == [1, 0] and got.image_size.tolist() == [64.0, 64.0]
    assert not any(loss.assigner._forward_hooks for loss in branches.values())  # the capture lived for the call only


def test_obb_targets_are_the_rotated_assignment():
    """OBB: Targets hold the rotated assigner's xywhr GT and targets (pixels, radians) and their enclosing xyxy boxes;
    the targets are a copy, not rescaled by v8OBBLoss afterwards."""
    model, batch = make_student("yolov8n-obb.yaml"), make_obb_batch()
    base = model.init_criterion()
    _, _, targets = student_loss_and_targets(base, model(batch["img"]), batch)
    got = targets["one2many"]
    assert got.gt_rboxes.shape == (3, 2, 5) and got.target_rboxes.shape[-1] == 5 and got.fg_mask.any()
    torch.testing.assert_close(got.gt_rboxes[0, 0], torch.tensor([32.0, 32.0, 25.6, 25.6, 0.3]))
    half = 12.8 * (math.cos(0.3) + math.sin(0.3))  # a square turned by 0.3 rad: half side of its enclosing box
    torch.testing.assert_close(got.gt_boxes[0, 0], torch.tensor([32 - half, 32 - half, 32 + half, 32 + half]))
    fg = got.fg_mask
    matched = got.gt_rboxes.gather(1, got.gt_index[..., None].expand(-1, -1, 5))
    torch.testing.assert_close(got.target_rboxes[fg], matched[fg])  # pixels: not divided by the stride
    torch.testing.assert_close(
        got.target_boxes[fg], got.gt_boxes.gather(1, got.gt_index[..., None].expand(-1, -1, 4))[fg]
    )


@pytest.mark.parametrize(("model_yaml", "loss_type"), ALL_STUDENTS, ids=ALL_IDS)
def test_target_boxes_stay_in_pixels_after_the_loss(model_yaml, loss_type):
    """Every task's target boxes are the matched GT boxes in pixels once the loss has run: v8PoseLoss, PoseLoss26 and
    v8OBBLoss divide their assigner's targets by the stride in place after the assignment (the pose ones made keypoint
    KD's OKS area stride² too small, so its term sat at its weight)."""
    model, batch = make_student(model_yaml), batch_for(model_yaml)
    base = model.init_criterion()
    _, _, targets = student_loss_and_targets(base, model(batch["img"]), batch)
    for got in targets.values():
        fg = got.fg_mask
        matched = got.gt_boxes.gather(1, got.gt_index[..., None].expand(-1, -1, 4))
        assert fg.any()
        torch.testing.assert_close(got.target_boxes[fg], matched[fg])


@pytest.mark.parametrize(("model_yaml", "loss_type"), ALL_STUDENTS, ids=ALL_IDS)
def test_criterion_total_is_the_gt_loss_plus_batch_size_times_kd_terms(model_yaml, loss_type):
    """Every task: ``criterion(preds, batch)`` = sum of Ultralytics' loss vector + B x (sum of KD terms); items gain
    the terms."""
    model, batch = make_student(model_yaml), batch_for(model_yaml)
    base = model.init_criterion()
    preds = model(batch["img"])
    expected, expected_items = base(preds, batch)
    criterion = DistillationCriterion(base, model, StubDistiller({"kd_a": 0.25, "kd_b": 2.0}))
    total, items = criterion(preds, batch)
    torch.testing.assert_close(total, expected.sum() + 3 * 2.25, rtol=1e-6, atol=0)
    assert list(items) == [*expected_items, "kd_a", "kd_b"]
    assert float(items["kd_a"]) == 0.25 and not items["kd_a"].requires_grad


def test_loss_parts_names_the_gt_components_and_the_kd_terms():
    """loss_parts (the balance step's input): GT components x B by Ultralytics' names, KD terms by theirs."""
    model, batch = make_student("yolov8n.yaml"), make_batch()
    base = model.init_criterion()
    preds = model(batch["img"])
    expected, _ = base(preds, batch)
    gt_parts, terms = DistillationCriterion(base, model, StubDistiller({"kd_a": 0.5})).loss_parts(preds, batch)
    assert list(gt_parts) == ["box_loss", "cls_loss", "dfl_loss"]
    torch.testing.assert_close(torch.stack(list(gt_parts.values())), expected, rtol=1e-6, atol=0)
    assert {name: float(value) for name, value in terms.items()} == {"kd_a": 0.5}


def test_kd_factor_zero_gives_zero_terms_without_running_the_teacher():
    """At KD factor 0 (schedule off) every term is an exact 0, the distiller is not called, and the total is GT."""
    model, batch = make_student("yolov8n.yaml"), make_batch()
    base = model.init_criterion()
    preds = model(batch["img"])
    distiller = StubDistiller({"kd_a": 5.0})
    criterion = DistillationCriterion(base, model, distiller)
    criterion.kd_factor = 0.0
    total, items = criterion(preds, batch)
    assert distiller.calls == 0 and float(items["kd_a"]) == 0.0
    torch.testing.assert_close(total, base(preds, batch)[0].sum(), rtol=1e-6, atol=0)


def test_kd_factor_multiplies_every_term():
    """A schedule factor of 0.5 halves every KD term, exactly."""
    model, batch = make_student("yolov8n.yaml"), make_batch()
    criterion = DistillationCriterion(model.init_criterion(), model, StubDistiller({"kd_a": 0.75, "kd_b": 3.0}))
    criterion.kd_factor = 0.5
    _, terms = criterion.loss_parts(model(batch["img"]), batch)
    assert {name: float(value) for name, value in terms.items()} == {"kd_a": 0.375, "kd_b": 1.5}


def test_non_finite_terms_are_flagged_and_the_flag_is_sticky():
    """A NaN term sets its flag (on the device, no sync); later finite steps do not clear it; others stay False."""
    model, batch = make_student("yolov8n.yaml"), make_batch()
    distiller = StubDistiller({"kd_a": float("nan"), "kd_b": 1.0})
    criterion = DistillationCriterion(model.init_criterion(), model, distiller)
    preds = model(batch["img"])
    criterion(preds, batch)
    assert criterion.nonfinite.tolist() == [True, False]
    distiller.terms = {"kd_a": 1.0, "kd_b": 1.0}
    criterion(preds, batch)
    assert criterion.nonfinite.tolist() == [True, False]


@pytest.mark.parametrize(("model_yaml", "loss_type"), ALL_STUDENTS, ids=ALL_IDS)
def test_without_kd_terms_the_total_is_exactly_ultralytics(model_yaml, loss_type):
    """Every task, no methods (empty distiller): the criterion returns Ultralytics' own loss vector and items
    unchanged."""
    model, batch = make_student(model_yaml), batch_for(model_yaml)
    base = model.init_criterion()
    assert type(base) is loss_type
    preds = model(batch["img"])
    loss, items = DistillationCriterion(base, model, StubDistiller({}))(preds, batch)
    expected, expected_items = base(preds, batch)
    assert torch.equal(loss, expected) and items.keys() == expected_items.keys()
    assert all(torch.equal(value, expected_items[name]) for name, value in items.items())


def test_a_loss_without_an_assigner_is_refused():
    """A criterion whose assignment cannot be read (no assigner module) is a TypeError naming it."""

    class OtherLoss:
        def __call__(self, preds, batch):
            return torch.zeros(3), {}

    model, batch = make_student("yolov8n.yaml"), make_batch()
    with pytest.raises(TypeError, match="OtherLoss has no assigner module"):
        student_loss_and_targets(OtherLoss(), model(batch["img"]), batch)
