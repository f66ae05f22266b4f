"""adapter_for: a head adapter chosen by the exact class of the model's head, or one clear line saying why not."""

import pytest
import torch
from ultralytics.nn.tasks import ClassificationModel, DetectionModel, OBBModel, PoseModel, SegmentationModel

from yolokd.heads import (
    ADAPTERS,
    DetectHeadAdapter,
    OBBHeadAdapter,
    PoseHeadAdapter,
    SegmentHeadAdapter,
    UnsupportedHeadError,
    adapter_for,
    check_head_pair,
)


def _model(model_class, name: str):
    torch.manual_seed(0)
    return model_class(name, nc=3, verbose=False)


@pytest.mark.parametrize(
    ("name", "family", "levels"),
    [
        ("yolov8n.yaml", "YOLOv8 (legacy head)", 3),
        ("yolo11n.yaml", "YOLO11 (DWConv cls branch)", 3),
        ("yolov10n.yaml", "YOLOv10-style (one2one + one2many, DFL)", 3),
        ("yolo26n.yaml", "YOLO26 (one2one + one2many, reg_max=1)", 3),
        ("yolov8n-p2.yaml", "YOLOv8 (legacy head)", 4),
    ],
)
def test_detect_models_get_the_detect_adapter(name, family, levels):
    """Every Detect-family model (Detect and v10Detect heads) is read by DetectHeadAdapter, task 'detect'."""
    adapter = adapter_for(_model(DetectionModel, name))
    assert type(adapter) is DetectHeadAdapter and adapter.task == "detect"
    assert adapter.spec.family == family and adapter.spec.num_levels == levels


@pytest.mark.parametrize(
    ("model_class", "name", "head", "task"),
    [
        (SegmentationModel, "yolo26n-seg.yaml", "Segment26", "segment"),
        (PoseModel, "yolo26n-pose.yaml", "Pose26", "pose"),
        (OBBModel, "yolo26n-obb.yaml", "OBB26", "obb"),
    ],
)
def test_task_heads_that_subclass_detect_are_refused_naming_the_task(model_class, name, head, task):
    """YOLO26's Segment/Pose/OBB heads (no adapter yet) are not read as Detect or as their v8 task head: one line
    names the head and the task."""
    model = _model(model_class, name)
    with pytest.raises(UnsupportedHeadError) as error:
        adapter_for(model)
    message = str(error.value)
    assert f"head is {head}: {task} models with this head are not supported yet" in message and "\n" not in message
    assert "Detect or v10Detect" in message and "segment models with a Segment head" in message
    with pytest.raises(TypeError, match="DetectHeadAdapter reads"):  # the adapter itself checks the exact type too
        DetectHeadAdapter(model)


@pytest.mark.parametrize(("name", "family"), [("yolov8n-seg.yaml", "YOLOv8"), ("yolo11n-seg.yaml", "YOLO11")])
def test_segment_models_get_the_segment_adapter(name, family):
    """YOLOv8/11-seg are read by SegmentHeadAdapter, task 'segment'; their views carry mask coefficients and
    prototypes next to the detection part."""
    model = _model(SegmentationModel, name).train()
    adapter = adapter_for(model)
    assert type(adapter) is SegmentHeadAdapter and adapter.spec.task == "segment"
    assert adapter.spec.family.startswith(family) and adapter.spec.strides == (8.0, 16.0, 32.0)
    preds = model(torch.rand(2, 3, 64, 64))
    view = adapter.build_view(adapter.split_branches(preds)["one2many"])
    anchors = 8 * 8 + 4 * 4 + 2 * 2
    assert view.cls_logits.shape == (2, anchors, 3) and view.boxes.shape == (2, anchors, 4)
    assert view.mask_coefficients.shape == (2, anchors, 32) and view.prototypes.shape == (2, 32, 16, 16)


@pytest.mark.parametrize("name", ["yolov8n-obb.yaml", "yolo11n-obb.yaml"])
def test_obb_models_get_the_obb_adapter_and_decode_as_ultralytics(name):
    """YOLOv8/11-obb are read by OBBHeadAdapter, task 'obb'; its rotated boxes (pixels, radians) are Ultralytics' own
    eval decoding, ``boxes`` encloses them, and an axis-aligned ``decode`` (which would drop the angle) is refused."""
    model = _model(OBBModel, name).eval()
    adapter = adapter_for(model)
    assert type(adapter) is OBBHeadAdapter and adapter.spec.task == "obb" and adapter.spec.strides == (8.0, 16.0, 32.0)
    with torch.no_grad():
        decoded, raw = model(torch.rand(2, 3, 64, 64))  # decoded: (B, 4 + C + 1, A) xywh pixels, scores, angle
    view = adapter.build_view(adapter.split_branches((decoded, raw))["one2many"])
    expected = torch.cat((decoded[:, :4], decoded[:, -1:]), 1).permute(0, 2, 1)
    torch.testing.assert_close(view.rboxes, expected, atol=1e-4, rtol=1e-5)
    assert view.angles.shape == (2, 84, 1) and torch.equal(view.angles, view.rboxes[..., 4:])
    assert (view.boxes[..., :2] <= view.rboxes[..., :2]).all() and (view.boxes[..., 2:] >= view.rboxes[..., :2]).all()
    with pytest.raises(TypeError, match="OBB boxes need their angle"):
        adapter.decode(view.box_output, view.anchors)


@pytest.mark.parametrize("name", ["yolov8n-pose.yaml", "yolo11n-pose.yaml"])
def test_pose_models_get_the_pose_adapter_and_decode_as_ultralytics(name):
    """YOLOv8/11-pose are read by PoseHeadAdapter, task 'pose', with their keypoint shape; keypoints (pixels) and
    visibility are Ultralytics' own eval decoding."""
    torch.manual_seed(0)
    model = PoseModel(name, nc=3, data_kpt_shape=(4, 3), verbose=False).eval()
    adapter = adapter_for(model)
    assert type(adapter) is PoseHeadAdapter and adapter.spec.task == "pose" and adapter.spec.keypoint_shape == (4, 3)
    with torch.no_grad():
        decoded, raw = model(torch.rand(2, 3, 64, 64))  # (B, 4 + C + K·3, A): boxes, scores, keypoints
    view = adapter.build_view(adapter.split_branches((decoded, raw))["one2many"])
    expected = decoded[:, 4 + 3 :].permute(0, 2, 1).reshape(2, 84, 4, 3)
    torch.testing.assert_close(view.keypoints, expected[..., :2])
    torch.testing.assert_close(view.keypoint_visibility.sigmoid(), expected[..., 2])


TASK_MODELS = {
    "detect": (DetectionModel, "yolov8n.yaml"),
    "segment": (SegmentationModel, "yolov8n-seg.yaml"),
    "obb": (OBBModel, "yolov8n-obb.yaml"),
    "pose": (PoseModel, "yolov8n-pose.yaml"),
}


@pytest.mark.parametrize("student", list(TASK_MODELS))
@pytest.mark.parametrize("teacher", list(TASK_MODELS))
def test_teacher_and_student_of_different_tasks_are_refused(teacher, student):
    """Every task mismatch is one line naming both tasks; the same task passes."""
    specs = {role: adapter_for(_model(*TASK_MODELS[task])).spec for role, task in (("t", teacher), ("s", student))}
    if teacher == student:
        check_head_pair(specs["t"], specs["s"])
        return
    with pytest.raises(ValueError) as error:
        check_head_pair(specs["t"], specs["s"])
    message = str(error.value)
    assert f"teacher is a {teacher} model" in message and f"student is a {student} model" in message
    assert "same task" in message and "\n" not in message


def test_other_models_are_refused_without_a_promise():
    """A classifier is refused as well (a ValueError: the CLI prints it as one line), with no 'yet'."""
    with pytest.raises(ValueError, match=r"head is Classify: classify models are not supported\. yolokd distils"):
        adapter_for(_model(ClassificationModel, "yolov8n-cls.yaml"))
    with pytest.raises(UnsupportedHeadError, match=r"head is no head \(Linear\)"):
        adapter_for(torch.nn.Linear(2, 2))


def test_every_adapter_names_its_exact_head_classes_once():
    """The index holds each head class in one adapter only, so dispatch is unambiguous."""
    head_types = [head_type for adapter in ADAPTERS for head_type in adapter.head_types]
    assert len(head_types) == len(set(head_types))
    assert all(adapter.task and adapter.models for adapter in ADAPTERS)
