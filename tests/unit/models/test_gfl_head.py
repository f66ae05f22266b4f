"""The GFL head as an Ultralytics module: built from the shipped YAML, Ultralytics' output layouts, weight loading."""

import pytest
import torch
from dense_models import TINY_GFL, tiny_gfl
from ultralytics.utils.tal import dist2bbox, make_anchors

from yolokd.models import MODELS_DIR, DenseDetectionModel, GFLDetect, dense_head_name, resolve_model_yaml


@pytest.mark.parametrize(
    ("name", "width"), [("gfl-yolov8n.yaml", 64), ("gfl-yolov8s.yaml", 128), ("gfl-r18.yaml", 128)]
)
def test_shipped_yaml_builds_by_scale(name, width):
    """gfl-yolov8{n,s}.yaml resolve to yolokd/cfg/models/gfl-yolov8.yaml at their scale, gfl-r18.yaml (torchvision
    ResNet-18 through Ultralytics' TorchVision module, no download) to itself: strides 8/16/32, one width."""
    model = DenseDetectionModel(name, nc=5, verbose=False)
    head = model.model[-1]
    assert type(head) is GFLDetect and head.nc == 5 and head.reg_max == 16 and head.stacked_convs == 4
    assert head.stride.tolist() == [8.0, 16.0, 32.0] and head.cls_pred.in_channels == width
    assert resolve_model_yaml(name) == MODELS_DIR / name and dense_head_name(name) == "GFLDetect"


def test_yolo_yamls_are_not_dense():
    """dense_head_name is None for Ultralytics' own YAMLs and unknown files."""
    assert dense_head_name("yolov8n.yaml") is None and dense_head_name("missing.yaml") is None


def test_training_output_has_ultralytics_raw_layout():
    """Training forward: boxes (B, 4R, A), scores (B, C, A), feats L tensors, A = 8² + 4² + 2² at 64 px."""
    out = tiny_gfl().train()(torch.rand(2, 3, 64, 64))
    assert out["boxes"].shape == (2, 64, 84) and out["scores"].shape == (2, 3, 84) and len(out["feats"]) == 3


def test_eval_output_is_decoded_xywh_pixels_and_sigmoid_scores():
    """Eval forward: (B, 4 + C, A) = DFL-expectation boxes as xywh pixels + sigmoid scores, then the raw dict."""
    model = tiny_gfl().eval()
    decoded, raw = model(torch.rand(2, 3, 64, 64))
    assert decoded.shape == (2, 7, 84)
    anchors, strides = make_anchors(raw["feats"], model.stride, 0.5)
    distances = raw["boxes"].view(2, 4, 16, 84).softmax(2).mul(torch.arange(16.0).view(1, 1, 16, 1)).sum(2)
    boxes = dist2bbox(distances, anchors.T.unsqueeze(0), xywh=True, dim=1) * strides.T
    assert torch.allclose(decoded[:, :4], boxes, atol=1e-4)
    assert torch.allclose(decoded[:, 4:], raw["scores"].sigmoid())


def test_export_mode_returns_the_decoded_tensor_only():
    """With Ultralytics' export flag the head returns (B, 4 + C, A) alone (what the ONNX graph outputs)."""
    model = tiny_gfl().eval()
    model.model[-1].export = True
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 7, 84)


def test_unequal_level_widths_are_refused():
    """One shared tower needs one width: a neck with 8/16/16 levels is a ValueError naming the fix."""
    cfg = {**TINY_GFL, "head": [[[1, 3, 4], 1, "GFLDetect", ["nc", 2]]]}
    with pytest.raises(ValueError, match=r"same width; got \[8, 16, 16\].*1x1 Conv per level"):
        DenseDetectionModel(cfg, verbose=False)


def test_weights_load_through_ultralytics_load():
    """DetectionModel.load (Ultralytics' fine-tune/resume path) transfers every tensor of a GFL model."""
    source, target = tiny_gfl(seed=0), tiny_gfl(seed=1)
    target.load(source, verbose=False)
    pairs = zip(source.state_dict().values(), target.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
