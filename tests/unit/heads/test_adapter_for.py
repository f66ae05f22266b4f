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
        ("yolov10n.yaml", "YOLOv10-style (one2one + one2many, DFL)", 3),
        ("yolov8n-p2.yaml", "YOLOv8 (legacy head)", 4),
    ],
)
def test_detect_models_get_the_detect_adapter(name, family, levels):
    """Detect-family models beyond v8/11/26 (those are in the report test below): v10Detect and a 4-level head are
    read by DetectHeadAdapter, task 'detect'."""
    adapter = adapter_for(_model(DetectionModel, name))
    assert type(adapter) is DetectHeadAdapter and adapter.task == "detect"
    assert adapter.spec.family == family and adapter.spec.num_levels == levels


ADAPTER_OF_TASK = {
    "detect": DetectHeadAdapter,
    "segment": SegmentHeadAdapter,
    "pose": PoseHeadAdapter,
    "obb": OBBHeadAdapter,
}
MODEL_CLASS_OF_TASK = {"detect": DetectionModel, "segment": SegmentationModel, "pose": PoseModel, "obb": OBBModel}
SUFFIX_OF_TASK = {"detect": "", "segment": "-seg", "pose": "-pose", "obb": "-obb"}
FAMILIES = {  # series -> (yaml prefix, family, reg_max, branches)
    "v8": ("yolov8n", "YOLOv8 (legacy head)", 16, ("one2many",)),
    "11": ("yolo11n", "YOLO11 (DWConv cls branch)", 16, ("one2many",)),
    "26": ("yolo26n", "YOLO26 (one2one + one2many, reg_max=1)", 1, ("one2many", "one2one")),
}
HEAD_CLASS = {  # (task, series) -> the Ultralytics head class name
    **{(task, series): name for series in ("v8", "11") for task, name in (("segment", "Segment"), ("pose", "Pose"))},
    **{("obb", series): "OBB" for series in ("v8", "11")},
    **{("detect", series): "Detect" for series in FAMILIES},
    ("segment", "26"): "Segment26",
    ("pose", "26"): "Pose26",
    ("obb", "26"): "OBB26",
}


def _task_model(task: str, series: str, train: bool = False):
    name = FAMILIES[series][0] + SUFFIX_OF_TASK[task] + ".yaml"
    torch.manual_seed(0)
    extra = {"data_kpt_shape": (4, 3)} if task == "pose" else {}
    model = MODEL_CLASS_OF_TASK[task](name, nc=3, verbose=False, **extra)
    return model.train() if train else model.eval()


@pytest.mark.parametrize("series", list(FAMILIES))
@pytest.mark.parametrize("task", list(ADAPTER_OF_TASK))
def test_adapter_reports_family_levels_strides_and_task(task, series):
    """v8/11/26 x detect/segment/pose/OBB: the task's adapter, its head class, the family, 3 levels at strides 8/16/32,
    reg_max, the branches (YOLO26: one2many + one2one) and the task."""
    model = _task_model(task, series)
    adapter = adapter_for(model)
    _, family, reg_max, branches = FAMILIES[series]
    assert type(adapter) is ADAPTER_OF_TASK[task] and type(adapter.head).__name__ == HEAD_CLASS[task, series]
    spec = adapter.spec
    assert (spec.family, spec.task, spec.num_levels, spec.strides) == (family, task, 3, (8.0, 16.0, 32.0))
    assert (spec.reg_max, spec.branches, spec.num_classes) == (reg_max, branches, 3)
    assert spec.keypoint_shape == ((4, 3) if task == "pose" else None)


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_yolo26_task_views_carry_every_branch_and_the_task_outputs(task):
    """A YOLO26 task head in training: one view per branch (one2many, one2one), each with the task's outputs at every
    anchor (Segment26's prototypes are the first of Proto26's (prototypes, semantic) pair)."""
    model = _task_model(task, "26", train=True)
    adapter = adapter_for(model)
    raw = adapter.split_branches(model(torch.rand(2, 3, 64, 64)))
    assert set(raw) == {"one2many", "one2one"}
    for branch in raw:
        view = adapter.build_view(raw[branch])
        assert view.cls_logits.shape == (2, 84, 3) and view.boxes.shape == (2, 84, 4) and view.reg_max == 1
        if task == "segment":
            assert isinstance(raw[branch]["proto"], tuple)
            assert view.mask_coefficients.shape == (2, 84, 32) and view.prototypes.shape == (2, 32, 16, 16)
        elif task == "pose":
            assert view.keypoints.shape == (2, 84, 4, 2) and view.keypoint_visibility.shape == (2, 84, 4)
        else:
            assert view.rboxes.shape == (2, 84, 5) and view.angles.shape == (2, 84, 1)


def test_a_task_head_without_an_adapter_is_refused_naming_the_task():
    """A head of a served task that no adapter reads (a new subclass of Segment, like YOLOE's) is not read as its
    parent: one line names the head and the task."""
    model = _model(SegmentationModel, "yolov8n-seg.yaml")

    class NewSegment(type(model.model[-1])):
        """A Segment subclass no adapter lists."""

    model.model[-1].__class__ = NewSegment
    with pytest.raises(UnsupportedHeadError) as error:
        adapter_for(model)
    message = str(error.value)
    assert "head is NewSegment: segment models with this head are not supported" in message and "\n" not in message
    assert "Detect or v10Detect" in message and "segment models with a Segment or Segment26 head" in message
    with pytest.raises(TypeError, match="SegmentHeadAdapter reads"):  # the adapter itself checks the exact type too
        SegmentHeadAdapter(model)


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


@pytest.mark.parametrize("name", ["yolov8n-obb.yaml", "yolo11n-obb.yaml", "yolo26n-obb.yaml"])
def test_obb_models_get_the_obb_adapter_and_decode_as_ultralytics(name):
    """YOLOv8/11/26-obb are read by OBBHeadAdapter, task 'obb'; its rotated boxes (pixels, radians; OBB26's raw angle)
    are Ultralytics' own eval decoding, ``boxes`` encloses them, and an axis-aligned ``decode`` (which would drop the
    angle) is refused."""
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
    frame_boxes = adapter.decode_in_box_frame(view.box_output, view.anchors) * view.strides  # the box in its own frame
    torch.testing.assert_close(frame_boxes[..., 2:] - frame_boxes[..., :2], view.rboxes[..., 2:4])


@pytest.mark.parametrize("name", ["yolov8n-pose.yaml", "yolo11n-pose.yaml", "yolo26n-pose.yaml"])
def test_pose_models_get_the_pose_adapter_and_decode_as_ultralytics(name):
    """YOLOv8/11/26-pose are read by PoseHeadAdapter, task 'pose', with their keypoint shape; keypoints (pixels) and
    visibility are Ultralytics' own eval decoding (Pose26 decodes ``(raw + anchor) · stride``, Pose ``(2 · raw +
    anchor - 0.5) · stride``)."""
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
