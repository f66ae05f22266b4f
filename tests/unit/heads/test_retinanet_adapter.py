"""The RetinaNet adapter: spec (anchors per cell and their shapes), views in the 9-anchor layout, per-level recording
of its shared towers, and the tail CrossKD runs."""

import pytest
import torch
from dense_models import tiny_retinanet

from yolokd.heads import RetinaNetHeadAdapter, StageRecorder, adapter_for
from yolokd.models.anchors import anchor_shapes
from yolokd.views import flatten_anchors

PARTS = ("box", "cls", "box_preact", "cls_preact")


def test_spec_has_levels_strides_and_nine_anchors_per_cell():
    """adapter_for picks the RetinaNet adapter: 3 levels at strides 8/16/32, reg_max 1, 9 anchors of mmdetection's
    shapes, 2 tower stages of the head's width."""
    adapter = adapter_for(tiny_retinanet())
    spec = adapter.spec
    assert isinstance(adapter, RetinaNetHeadAdapter) and spec.family.startswith("RetinaNet")
    assert spec.strides == (8.0, 16.0, 32.0) and spec.reg_max == 1 and spec.num_classes == 3
    assert spec.anchors_per_cell == 9 and spec.anchor_shapes == anchor_shapes()
    assert spec.feat_channels == (16, 16, 16) and spec.stage_channels == {"box": 16, "cls": 16}
    assert spec.num_stages == 2 and spec.branches == ("one2many",) and spec.task == "detect"


def test_view_has_nine_anchors_per_cell_and_the_eval_boxes():
    """A = 84 cells x 9; a cell's nine anchors share its centre; the view's boxes (xyxy pixels) are the eval output's
    (xywh pixels)."""
    model = tiny_retinanet().eval()
    adapter = adapter_for(model)
    decoded, raw = model(torch.rand(2, 3, 64, 64))
    view = adapter.build_view(adapter.split_branches((decoded, raw))["one2many"])
    assert view.anchors_per_cell == 9 and view.cls_logits.shape == (2, 756, 3) and view.box_output.shape == (2, 756, 4)
    assert torch.equal(view.anchors[:9], torch.tensor([[0.5, 0.5]]).expand(9, 2)) and view.level_sizes == [576, 144, 36]
    assert torch.equal(view.cell_points()[:2], torch.tensor([[4.0, 4.0], [12.0, 4.0]]))
    centre, size = decoded[:, :2].transpose(1, 2), decoded[:, 2:4].transpose(1, 2)
    assert torch.allclose(view.boxes, torch.cat((centre - size / 2, centre + size / 2), -1), atol=1e-4)


@pytest.fixture(scope="module")
def recorded():
    """The tiny RetinaNet, its adapter, one forward's raw outputs and every recorded stage output."""
    model = tiny_retinanet().eval()
    adapter = adapter_for(model)
    recorder = StageRecorder(adapter, ("one2many",), PARTS)
    with torch.no_grad(), adapter.raw_outputs(), recorder.recording():
        raw = model(torch.rand(2, 3, 64, 64))
        stages = recorder.stages("one2many")
    return adapter, raw, stages


def test_shared_stages_are_recorded_per_level(recorded):
    """One hook per shared stage yields L outputs in level order; the pre-activation (conv output, no norm) goes
    below 0 where the ReLU output does not."""
    _, _, stages = recorded
    for part in PARTS:
        assert [tuple(t.shape) for t in stages[part][1]] == [(2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2)]
    assert stages["box_preact"][1][0].min() < 0 <= stages["box"][1][0].min()


@pytest.mark.parametrize("stage", [0, 1, 2])
@pytest.mark.parametrize("part", ["box", "cls"])
def test_tail_from_any_stage_reproduces_the_head(recorded, part, stage):
    """run_tail from stage s, flattened in the 9-anchor layout, gives the head's own outputs at every level."""
    adapter, raw, stages = recorded
    own = torch.split(raw["boxes" if part == "box" else "scores"], [576, 144, 36], dim=2)
    for level in range(3):
        preactivation = 0 < stage < 2
        x = raw["feats"][level] if stage == 0 else stages[part + ("_preact" if preactivation else "")][stage - 1][level]
        out = adapter.run_tail("one2many", part, level, stage, x, preactivation=preactivation)
        assert torch.allclose(flatten_anchors(out, 9), own[level], atol=1e-5)


def test_decode_is_the_heads_delta_decoding(recorded):
    """decode(0 deltas) gives the anchor boxes: the 32 px square anchor of P3's first cell is [-12, -12, 20, 20] px."""
    adapter, raw, _ = recorded
    view = adapter.build_view(raw)
    boxes = adapter.decode(torch.zeros(1, 756, 4), view.anchors) * view.strides
    assert torch.allclose(boxes[0, 3], torch.tensor([-12.0, -12.0, 20.0, 20.0]))
