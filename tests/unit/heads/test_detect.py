"""The Detect-family head adapter: specs, views, decoding, stage modules and pair checks."""

import pytest
import torch
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.loss import v8DetectionLoss
from ultralytics.utils.tal import make_anchors

from yolokd.heads import DetectHeadAdapter, StageRecorder, check_head_pair


def _model(name: str, nc: int = 3) -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel(name, nc=nc, verbose=False)


@pytest.mark.parametrize(
    ("name", "family", "reg_max", "branches"),
    [
        ("yolov8n.yaml", "YOLOv8 (legacy head)", 16, ("one2many",)),
        ("yolo11n.yaml", "YOLO11 (DWConv cls branch)", 16, ("one2many",)),
        ("yolov10n.yaml", "YOLOv10-style (one2one + one2many, DFL)", 16, ("one2many", "one2one")),
        ("yolo26n.yaml", "YOLO26 (one2one + one2many, reg_max=1)", 1, ("one2many", "one2one")),
    ],
)
def test_spec_per_family(name, family, reg_max, branches):
    """Each family is recognised with its reg_max, branches, levels and widths."""
    spec = DetectHeadAdapter(_model(name)).spec
    assert (spec.family, spec.reg_max, spec.branches) == (family, reg_max, branches)
    assert spec.strides == (8.0, 16.0, 32.0) and spec.num_classes == 3
    assert spec.feat_channels == (64, 128, 256)


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo26n.yaml"])
def test_view_shapes_and_decode_match_ultralytics(name):
    """View tensors have the documented shapes; decoded boxes equal Ultralytics' own decode x stride."""
    model = _model(name).train()
    adapter = DetectHeadAdapter(model)
    raw = adapter.split_branches(model(torch.rand(2, 3, 64, 64)))["one2many"]
    view = adapter.build_view(raw)
    anchors = 8 * 8 + 4 * 4 + 2 * 2
    assert view.cls_logits.shape == (2, anchors, 3)
    assert view.box_output.shape == (2, anchors, 4 * adapter.spec.reg_max)
    assert view.boxes.shape == (2, anchors, 4) and view.anchors.shape == (anchors, 2)
    model.args = type("Args", (), {"box": 7.5, "cls": 0.5, "dfl": 1.5})()
    reference = v8DetectionLoss(model)
    anchor_points, stride_tensor = make_anchors(raw["feats"], reference.stride, 0.5)
    box_output = raw["boxes"].permute(0, 2, 1)
    if adapter.spec.reg_max == 1:  # yolokd clamps direct ltrb at 0 (a negative side would flip the box)
        box_output = box_output.clamp(min=0)
    expected = reference.bbox_decode(anchor_points, box_output) * stride_tensor
    assert torch.allclose(view.boxes, expected, atol=1e-5)


def test_raw_outputs_in_eval_mode():
    """In eval mode raw_outputs() yields the raw dict (no decode) and leaves BatchNorm in eval."""
    model = _model("yolov8n.yaml").eval()
    adapter = DetectHeadAdapter(model)
    with adapter.raw_outputs():
        preds = model(torch.rand(1, 3, 64, 64))
    assert isinstance(preds, dict) and "scores" in preds
    assert not adapter.head.training and not adapter.head.cv2[0][0].bn.training


def test_stage_recorder_records_every_stage_of_every_level():
    """Inside a recording every stage of every level is recorded; leaving it removes every hook."""
    model = _model("yolo11n.yaml").train()
    adapter = DetectHeadAdapter(model)
    recorder = StageRecorder(adapter, ("one2many",), ("box", "cls"))
    with recorder.recording():
        model(torch.rand(1, 3, 64, 64))
        stages = recorder.stages("one2many")
    assert [t.shape[1] for t in stages["cls"][0]] == [adapter.spec.stage_channels["cls"]] * 3
    assert [t.shape[-1] for t in stages["box"][1]] == [8, 4, 2]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_stage_modules_are_the_towers_stages_and_their_batchnorms():
    """One module per level: the stage itself, or for a pre-activation the BatchNorm of the Conv ending the stage."""
    adapter = DetectHeadAdapter(_model("yolo11n.yaml"))
    head = adapter.head
    assert adapter.stage_modules("one2many", "box", 1) == [head.cv2[level][1] for level in range(3)]
    assert adapter.stage_modules("one2many", "cls_preact", 0) == [head.cv3[level][0][1].bn for level in range(3)]
    assert adapter.spec.num_stages == 2


def test_stage_recorder_gives_no_stages_for_a_branch_it_does_not_hook():
    """Hooks on one2many only: one2one has no stages (a mixed-branch run asks for both), one2many has them all."""
    model = _model("yolo26n.yaml").train()
    recorder = StageRecorder(DetectHeadAdapter(model), ("one2many",), ("box_preact",))
    with recorder.recording():
        model(torch.rand(1, 3, 64, 64))
        assert recorder.stages("one2one") == {}
        assert [len(levels) for levels in recorder.stages("one2many")["box_preact"]] == [3, 3]


def test_pair_check_rejects_other_classes():
    """A teacher with another class count is refused, naming both counts."""
    with pytest.raises(ValueError, match="teacher predicts 5 classes but the student predicts 3"):
        check_head_pair(
            DetectHeadAdapter(_model("yolov8s.yaml", nc=5)).spec, DetectHeadAdapter(_model("yolov8n.yaml")).spec
        )


def test_pair_check_rejects_other_levels():
    """A P2-P5 teacher cannot supervise a P3-P5 student: the error lists both stride sets."""
    with pytest.raises(ValueError, match=r"strides \[4.0, 8.0, 16.0, 32.0\]"):
        check_head_pair(
            DetectHeadAdapter(_model("yolov8n-p2.yaml")).spec, DetectHeadAdapter(_model("yolov8n.yaml")).spec
        )


def test_cross_family_pair_accepted():
    """YOLO11s teacher -> YOLOv8n student passes (widths differ; aligners handle them)."""
    check_head_pair(DetectHeadAdapter(_model("yolo11s.yaml")).spec, DetectHeadAdapter(_model("yolov8n.yaml")).spec)
