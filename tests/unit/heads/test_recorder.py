"""StageRecorder: records inside a recording only, per level (also for a tower shared by every level), and a model
carrying its hooks still deep-copies and pickles."""

import copy
import pickle

import pytest
import torch
from torch import nn

from yolokd.heads import StageRecorder
from yolokd.heads.base import HeadAdapter
from yolokd.views import HeadSpec

LEVELS = 3


class SharedTowerHead(nn.Module):
    """A GFL/RetinaNet-style head: one two-stage tower applied to every level's feature, P3 first."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.tower = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Conv2d(channels, channels, 1))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.tower(feat) for feat in feats]


class SharedTowerModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(SharedTowerHead())

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.model[-1](feats)


class SharedTowerAdapter(HeadAdapter):
    """The part of the protocol the recorder uses, for the toy head (the rest is not needed here)."""

    head_types = (SharedTowerHead,)
    task, models = "detect", "toy"

    def read_spec(self) -> HeadSpec:
        return HeadSpec("shared tower", 2, (8.0, 16.0, 32.0), 1, ("one2many",), (4,) * LEVELS, {"box": 4}, 2)

    def stage_modules(self, branch, part, stage):
        return [self.head.tower[stage]]  # one module, called once per level

    def split_branches(self, preds):
        raise NotImplementedError

    def build_view(self, raw, stages=None):
        raise NotImplementedError

    def decode(self, box_output, anchors):
        raise NotImplementedError

    def run_tail(self, branch, part, level, stage, x, preactivation=False):
        raise NotImplementedError

    def raw_outputs(self):
        raise NotImplementedError


def _feats(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 4, size, size, generator=generator) for size in (8, 4, 2)]


def _has_hooks(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_shared_tower_is_recorded_per_level_in_call_order():
    """One hook on the shared stage records one output per level; every forward records afresh (no growth)."""
    model = SharedTowerModel()
    recorder = StageRecorder(SharedTowerAdapter(model), ("one2many",), ("box",))
    with recorder.recording():
        model(_feats(0))
        feats = _feats(1)
        outputs = model(feats)
        stages = recorder.stages("one2many")["box"]
    assert [[t.shape[-1] for t in stage] for stage in stages] == [[8, 4, 2], [8, 4, 2]]
    assert all(torch.equal(recorded, out) for recorded, out in zip(stages[1], outputs, strict=True))
    assert torch.equal(stages[0][0], model.model[-1].tower[0](feats[0]))


def test_nothing_is_recorded_outside_a_recording():
    """Before and after a recording the model has no hook; stages() then says how to record."""
    model = SharedTowerModel()
    recorder = StageRecorder(SharedTowerAdapter(model), ("one2many",), ("box",))
    assert not _has_hooks(model)
    with recorder.recording():
        assert _has_hooks(model)
    model(_feats())
    assert not _has_hooks(model) and not recorder.store
    with pytest.raises(RuntimeError, match=r"run the model's forward inside recording\(\)"):
        recorder.stages("one2many")


def test_a_nested_recording_leaves_the_outer_one_running():
    """recording() inside a running recording (a balance measurement inside a step) does not stop it."""
    model = SharedTowerModel()
    recorder = StageRecorder(SharedTowerAdapter(model), ("one2many",), ("box",))
    with recorder.recording():
        with recorder.recording():
            pass
        assert recorder.active and _has_hooks(model)
        model(_feats())
        assert len(recorder.stages("one2many")["box"][0]) == LEVELS
    assert not recorder.active


def test_a_model_copied_or_pickled_mid_recording_carries_no_recorded_tensors():
    """Hooks are small picklable objects: deepcopy and pickle work mid-recording (after a forward with a graph); the
    copy's record is empty and inactive, so it records nothing, and the original keeps recording."""
    model = SharedTowerModel()
    recorder = StageRecorder(SharedTowerAdapter(model), ("one2many",), ("box",))
    with recorder.recording():
        model([f.requires_grad_(True) for f in _feats()])
        copied = copy.deepcopy(model)
        restored = pickle.loads(pickle.dumps(model))
        for other in (copied, restored):
            other(_feats())
            stores = {id(hook.store): hook.store for m in other.modules() for hook in m._forward_hooks.values()}
            (store,) = stores.values()  # the copy's hooks share one store of their own
            assert store is not recorder.store and not store and not store.active
        model(_feats(2))
        assert len(recorder.stages("one2many")["box"][1]) == LEVELS


def test_no_parts_records_nothing_and_adds_no_hooks():
    """A recorder for losses that read no stages is a no-op: no hooks, empty stages for every branch."""
    model = SharedTowerModel()
    recorder = StageRecorder(SharedTowerAdapter(model), ("one2many",), ())
    with recorder.recording():
        assert not _has_hooks(model)
        model(_feats())
        assert recorder.stages("one2many") == {}


def test_preactivations_survive_in_place_activations():
    """Ultralytics' load_checkpoint (how teachers are loaded) makes every SiLU in-place, which overwrote a recorded
    BN output with its activation; a pre-activation recorder turns them out-of-place, so the record is the BN output."""
    from ultralytics.nn.tasks import DetectionModel

    from yolokd.heads import adapter_for

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0  # BN statistics of one batch: O(1) features, as in a trained model
        if hasattr(module, "inplace"):
            module.inplace = True  # as load_checkpoint leaves a loaded model
    with torch.no_grad():
        model.train()(torch.rand(2, 3, 64, 64))
    model.eval()
    stage = model.model[-1].cv2[0][0]
    inputs = []
    stage.register_forward_pre_hook(lambda _module, args: inputs.append(args[0]))
    recorder = StageRecorder(adapter_for(model), ("one2many",), ("box_preact",))
    with recorder.recording(), torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
        recorded = recorder.stages("one2many")["box_preact"][0][0]
    with torch.no_grad():
        expected = stage.bn(stage.conv(inputs[0]))
    assert torch.equal(recorded, expected)
    assert recorded.min() < -0.3  # below SiLU's minimum (-0.278): not an activation
