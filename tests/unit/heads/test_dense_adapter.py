"""The shared-tower adapter (GFL): spec, views, per-level recording of shared stages, and the tail CrossKD runs."""

import pytest
import torch
from dense_models import tiny_fcos, tiny_gfl, tiny_retinanet

from yolokd.heads import SharedTowerHeadAdapter, StageRecorder, adapter_for

PARTS = ("box", "cls", "box_preact", "cls_preact")


@pytest.mark.parametrize(("build", "family", "reg_max"), [(tiny_gfl, "GFL", 16), (tiny_fcos, "FCOS", 1)])
def test_adapter_for_reads_the_dense_heads(build, family, reg_max):
    """adapter_for picks the shared-tower adapter; its spec has the head's levels, widths, stages and reg_max."""
    adapter = adapter_for(build())
    spec = adapter.spec
    assert isinstance(adapter, SharedTowerHeadAdapter) and spec.family.startswith(family)
    assert spec.strides == (8.0, 16.0, 32.0) and spec.reg_max == reg_max and spec.num_classes == 3
    assert spec.feat_channels == (16, 16, 16) and spec.stage_channels == {"box": 16, "cls": 16}
    assert spec.num_stages == 2 and spec.branches == ("one2many",) and spec.task == "detect"


def test_view_boxes_are_the_eval_output_in_xyxy():
    """The view's decoded boxes (xyxy pixels) are the boxes of Ultralytics' eval output (xywh pixels)."""
    model = tiny_gfl().eval()
    adapter = adapter_for(model)
    decoded, raw = model(torch.rand(2, 3, 64, 64))
    view = adapter.build_view(adapter.split_branches((decoded, raw))["one2many"])
    centre, size = decoded[:, :2].transpose(1, 2), decoded[:, 2:4].transpose(1, 2)
    assert torch.allclose(view.boxes, torch.cat((centre - size / 2, centre + size / 2), -1), atol=1e-4)
    assert view.cls_logits.shape == (2, 84, 3) and view.box_output.shape == (2, 84, 64)


@pytest.fixture(scope="module", params=[tiny_gfl, tiny_fcos], ids=["gfl", "fcos"])
def recorded(request):
    """A tiny GFL or FCOS model, its adapter, one forward's raw outputs and every recorded stage output."""
    model = request.param().eval()
    adapter = adapter_for(model)
    recorder = StageRecorder(adapter, ("one2many",), PARTS)
    with torch.no_grad(), adapter.raw_outputs(), recorder.recording():
        raw = model(torch.rand(2, 3, 64, 64))
        stages = recorder.stages("one2many")
    return model, adapter, raw, stages


def test_shared_stages_are_recorded_per_level(recorded):
    """One hook per shared stage yields L outputs in level order, (B, D, H_l, W_l); pre-activations go below 0."""
    _, _, _, stages = recorded
    for part in PARTS:
        assert len(stages[part]) == 2
        assert [tuple(t.shape) for t in stages[part][0]] == [(2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2)]
    assert stages["cls_preact"][0][0].min() < 0 <= stages["cls"][0][0].min()


@pytest.mark.parametrize("stage", [0, 1, 2])
@pytest.mark.parametrize("part", ["box", "cls"])
def test_tail_from_any_stage_reproduces_the_head(recorded, part, stage):
    """run_tail from stage s on the head's own recorded input (neck feature, pre-activation or last output) gives
    the head's own outputs at every level."""
    _, adapter, raw, stages = recorded
    key = "boxes" if part == "box" else "scores"
    own = torch.split(raw[key], [64, 16, 4], dim=2)
    for level in range(3):
        preactivation = 0 < stage < 2
        recorded_part = part + "_preact" if preactivation else part
        x = raw["feats"][level] if stage == 0 else stages[recorded_part][stage - 1][level]
        out = adapter.run_tail("one2many", part, level, stage, x, preactivation=preactivation)
        assert torch.allclose(out.flatten(2), own[level], atol=1e-5)


def test_tail_gradient_reaches_the_input_not_the_head():
    """A frozen teacher's tail: the foreign input gets a gradient, the head's parameters none."""
    model = tiny_gfl().eval().requires_grad_(False)
    adapter = adapter_for(model)
    x = torch.randn(1, 16, 8, 8, requires_grad=True)
    adapter.run_tail("one2many", "box", 0, 1, x, preactivation=True).sum().backward()
    assert x.grad.abs().sum() > 0 and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("build", "has_centerness"), [(tiny_fcos, True), (tiny_gfl, False), (tiny_retinanet, False)])
def test_views_carry_centerness_only_for_fcos(build, has_centerness):
    """FCOS: spec.centerness and (B, A) centerness logits in the view, the head's own raw output; GFL and RetinaNet
    (and every Detect head): False and None."""
    model = build().eval()
    adapter = adapter_for(model)
    with torch.no_grad(), adapter.raw_outputs():
        raw = model(torch.rand(2, 3, 64, 64))
    view = adapter.build_view(raw)
    assert adapter.spec.centerness is has_centerness and (view.centerness is not None) is has_centerness
    if has_centerness:
        assert view.centerness.shape == (2, 84) and torch.equal(view.centerness, raw["centerness"][:, 0])


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_box_tail_outputs_reproduce_the_fcos_centerness(stage):
    """run_tail_outputs of FCOS's box tower on its own recorded input gives its box output and its centerness logits at
    every level; run_tail gives the same box output; the cls tower has no extra output."""
    model = tiny_fcos().eval()
    adapter = adapter_for(model)
    recorder = StageRecorder(adapter, ("one2many",), PARTS)
    with torch.no_grad(), adapter.raw_outputs(), recorder.recording():
        raw = model(torch.rand(2, 3, 64, 64))
        stages = recorder.stages("one2many")
    preactivation = 0 < stage < 2
    own_boxes = torch.split(raw["boxes"], [64, 16, 4], dim=2)
    own_centerness = torch.split(raw["centerness"], [64, 16, 4], dim=2)
    for level in range(3):
        recorded_part = "box_preact" if preactivation else "box"
        x = raw["feats"][level] if stage == 0 else stages[recorded_part][stage - 1][level]
        outputs = adapter.run_tail_outputs("one2many", "box", level, stage, x, preactivation=preactivation)
        assert set(outputs) == {"box", "centerness"}
        assert torch.allclose(outputs["box"].flatten(2), own_boxes[level], atol=1e-5)
        assert torch.allclose(outputs["centerness"].flatten(2), own_centerness[level], atol=1e-5)
        assert torch.equal(adapter.run_tail("one2many", "box", level, stage, x, preactivation), outputs["box"])
    cls_input = raw["feats"][0]
    assert set(adapter.run_tail_outputs("one2many", "cls", 0, 0, cls_input)) == {"cls"}


def test_tail_outputs_of_heads_without_centerness_are_run_tails():
    """GFL's box tower: run_tail_outputs is {"box": run_tail's output}, nothing else."""
    model = tiny_gfl().eval()
    adapter = adapter_for(model)
    x = torch.randn(1, 16, 8, 8)
    outputs = adapter.run_tail_outputs("one2many", "box", 0, 0, x)
    assert set(outputs) == {"box"} and torch.equal(outputs["box"], adapter.run_tail("one2many", "box", 0, 0, x))
