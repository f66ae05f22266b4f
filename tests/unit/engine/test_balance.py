"""KD balance: gradient norms and shares on hand-made terms, the frozen scales, paper mode, and state restore."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from yolokd.engine.balance import (
    GT_TOTAL,
    Balance,
    BalanceReport,
    grad_norm,
    layer_concentration,
    layer_pull,
    measure_balance,
    method_scales,
    preserved_state,
)


class ToyDistiller:
    """Two methods: 'a' with terms a_x, a_y; 'b' with term b_z."""

    term_names = ("a_x", "a_y", "b_z")

    def method_terms(self):
        return {"a": ("a_x", "a_y"), "b": ("b_z",)}


class ToyCriterion:
    """GT parts and KD terms that are linear in one weight vector w, so every gradient norm is known by hand.

    gt box = 3 * w0 * B, gt cls = 4 * w1 * B (gradient norms 3B and 4B, together 5B);
    a_x = 6 * w0, a_y = 8 * w1 (method a: gradient norm 10 B after the trainer's x B); b_z = 0.5 * w2 (0.5 B).
    """

    distiller = ToyDistiller()

    def loss_parts(self, preds, batch):
        w = preds
        size = batch["img"].shape[0]
        gt = {"box": 3 * w[0] * size, "cls": 4 * w[1] * size}
        return gt, {"a_x": 6 * w[0], "a_y": 8 * w[1], "b_z": 0.5 * w[2]}


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))

    def forward(self, images):
        return self.w


def _batches(count: int, size: int = 2):
    return [{"img": torch.zeros(size, 3, 4, 4)} for _ in range(count)]


def test_grad_norm_of_a_known_function():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    assert grad_norm((3 * w[0] + 4 * w[1]), [w]) == pytest.approx(5.0)
    assert grad_norm(torch.tensor(2.0), [w]) == 0.0  # no graph: no gradient


def test_measure_balance_reports_the_hand_computed_ratios():
    report = measure_balance(ToyModel(), ToyCriterion(), _batches(3), {"a": 0.5, "b": 2.0}, "auto")
    size = 2
    assert report.batches == 3
    assert report.gt["box"].grad_norm == pytest.approx(3 * size)
    assert report.gt[GT_TOTAL].grad_norm == pytest.approx(5 * size)
    assert report.gt["box"].value == pytest.approx(3.0)  # value per batch: w0 = 1 times 3
    assert report.terms["a_x"].grad_norm == pytest.approx(6 * size)
    assert report.terms["a_y"].value == pytest.approx(16.0)
    a, b = report.methods["a"], report.methods["b"]
    assert a.grad_norm == pytest.approx(10 * size) and a.measured_share == pytest.approx(2.0)
    assert b.measured_share == pytest.approx(0.1)
    # scale = share * ||grad GT|| / ||grad method||: a 0.5 * 5 / 10, b 2 * 5 / 0.5
    assert a.scale == pytest.approx(0.25) and b.scale == pytest.approx(20.0)
    assert report.scales == {"a": a.scale, "b": b.scale}


def test_paper_mode_keeps_every_scale_at_one_but_still_measures():
    report = measure_balance(ToyModel(), ToyCriterion(), _batches(1), {"a": 0.5, "b": 2.0}, "paper")
    assert report.scales == {"a": 1.0, "b": 1.0}
    assert report.methods["a"].measured_share == pytest.approx(2.0)


def test_zero_gradient_method_is_a_clear_error_in_auto_mode():
    with pytest.raises(ValueError, match=r"method 'b' has gradient norm 0.0.*weight_mode=paper"):
        method_scales(5.0, {"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 1.0}, "auto")
    with pytest.raises(ValueError, match="GT loss has gradient norm nan"):
        method_scales(math.nan, {"a": 1.0}, {"a": 1.0}, "auto")
    assert method_scales(0.0, {"a": 0.0}, {"a": 1.0}, "paper") == {"a": 1.0}


def test_a_method_at_its_own_scale_keeps_scale_one_in_auto_mode():
    """grad_share None (LD's default): scale 1 whatever its gradient (even 0), the others scaled as usual; the
    table still measures its share and names its target as its own scale."""
    assert method_scales(4.0, {"a": 2.0, "ld": 0.0}, {"a": 0.5, "ld": None}, "auto") == {"a": 1.0, "ld": 1.0}
    report = measure_balance(ToyModel(), ToyCriterion(), _batches(1), {"a": None, "b": 2.0}, "auto")
    assert report.scales["a"] == 1.0 and report.methods["a"].measured_share == pytest.approx(2.0)
    assert report.methods["b"].measured_share * report.scales["b"] == pytest.approx(2.0)
    assert "| own scale |" in report.markdown()


def test_grad_share_must_be_positive_or_null():
    from yolokd.losses.ld import LDParams

    assert LDParams().grad_share is None and LDParams(grad_share=1.0).grad_share == 1.0
    with pytest.raises(ValueError, match=r"grad_share=0.0 must be > 0 \(or null"):
        LDParams(grad_share=0.0)


def test_layer_share_is_off_by_default_and_must_be_positive_or_null():
    from yolokd.losses import LOSSES
    from yolokd.losses.pgd import PGDParams

    assert all(loss.Params().layer_share is None for loss in LOSSES.values())
    assert PGDParams(layer_share=0.5).layer_share == 0.5
    with pytest.raises(ValueError, match=r"layer_share=-1 must be > 0 \(or null"):
        PGDParams(layer_share=-1)


def test_report_round_trips_exactly_and_renders(tmp_path):
    report = measure_balance(ToyModel(), ToyCriterion(), _batches(2), {"a": 1 / 3, "b": 0.7}, "auto")
    again = BalanceReport.from_dict(report.to_dict())
    assert again == report and again.scales == report.scales  # floats compare bit for bit
    json_path, md_path = report.write(tmp_path)
    assert json_path.is_file() and "| a | a_x, a_y |" in md_path.read_text()
    assert "| box |" in report.markdown() and "| b_z |" in report.markdown()


def test_preserved_state_restores_parameters_buffers_and_rngs():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = type("Data", (), {"buffer": [1, 2]})()
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    with preserved_state([model], dataset):
        model.train()(torch.randn(4, 2))  # updates BN statistics
        with torch.no_grad():
            model[0].weight.add_(1.0)
        dataset.buffer.append(3)
        random.random(), np.random.rand(), torch.rand(1)
    after = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    assert after == (random.random(), np.random.rand(), torch.rand(1))  # as if nothing had been drawn
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert dataset.buffer == [1, 2]


def test_preserved_state_restores_the_albumentations_generators():
    """Ultralytics' Albumentations re-seeds its transform (new generator objects) on the first call: a call inside
    the block leaves the transform and its children as they were, generators and their states."""
    from ultralytics.data.augment import Albumentations, Compose

    dataset = type("Data", (), {"transforms": Compose([Albumentations(p=1.0)])})()
    inner = dataset.transforms.transforms[0].transform
    nodes = [inner, *inner.transforms]

    def snapshot():
        return [
            (getattr(n, "seed", None), n.random_generator, n.py_random, n.random_generator.bit_generator.state,
             n.py_random.getstate())
            for n in nodes
        ]  # fmt: skip

    before = snapshot()
    with preserved_state([], dataset):
        inner.set_random_seed(torch.initial_seed())  # what Albumentations.__call__ does first
        inner.random_generator.random(3), inner.transforms[0].py_random.random()
    assert snapshot() == before  # the same seed, generator objects (compared by identity) and generator states


@pytest.mark.parametrize("bad", [{"weight_mode": "tuned"}, {"batches": 0}, {"start_epoch": -1.0}])
def test_balance_settings_are_checked(bad):
    with pytest.raises(ValueError):
        Balance(**bad)


def test_layer_concentration_on_hand_made_norms():
    conv = torch.tensor([True, True, True, True])
    # spread as the GT's: every reached layer at the whole-student ratio sqrt(3/4)
    assert layer_concentration(torch.tensor([1.0, 1, 1, 0]), torch.ones(4), conv) == pytest.approx(1 / math.sqrt(0.75))
    # all on one layer: ratio 10 there against 5 over the student
    assert layer_concentration(torch.tensor([100.0, 0, 0, 0]), torch.ones(4), conv) == pytest.approx(2.0)
    # a layer the GT loss never reaches is infinitely concentrated; biases and norms (not conv) are left out
    assert layer_concentration(torch.tensor([1.0, 1, 1, 0]), torch.tensor([0.0, 1, 1, 1]), conv) == math.inf
    assert layer_concentration(torch.tensor([1.0, 0, 0, 0]), torch.ones(4), ~conv) is None


class TwoConvModel(nn.Module):
    """conv1 -> feature h -> conv2 -> output; 1x1 convs so every gradient is a plain product."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(2, 3, 1, bias=False), nn.Conv2d(3, 2, 1, bias=False)

    def forward(self, images):
        feature = self.conv1(images)
        return feature, self.conv2(feature)


class FeatureVsOutputCriterion:
    """GT on the output; method 'out' = 3 x the GT's own form (same gradient direction everywhere), method 'feat' reads
    the intermediate feature only."""

    class distiller:  # noqa: N801 (the criterion's distiller attribute, as DistillationCriterion has)
        term_names = ("out_t", "feat_t")

        @staticmethod
        def method_terms():
            return {"out": ("out_t",), "feat": ("feat_t",)}

    def loss_parts(self, preds, batch):
        feature, output = preds
        size = batch["img"].shape[0]
        gt = output.pow(2).mean() * size
        return {"box": gt}, {"out_t": 3 * output.pow(2).mean(), "feat_t": feature.pow(2).mean()}


def test_balance_reports_output_methods_spread_and_feature_methods_concentrated():
    """A term on the output pulls each layer as the GT does (concentration 1); a term on the feature reaches conv1
    only, so its concentration is ||g_GT|| / ||g_GT on conv1||."""
    model = TwoConvModel()
    batch = {"img": torch.randn(2, 2, 4, 4)}
    report = measure_balance(model, FeatureVsOutputCriterion(), [batch], {"out": 1.0, "feat": 1.0}, "auto")
    assert report.methods["out"].concentration == pytest.approx(1.0, rel=1e-5)
    gt = FeatureVsOutputCriterion().loss_parts(model(batch["img"]), batch)[0]["box"]
    g1, g2 = torch.autograd.grad(gt, [model.conv1.weight, model.conv2.weight])
    expected = float((g1.pow(2).sum() + g2.pow(2).sum()).sqrt() / g1.pow(2).sum().sqrt())
    assert report.methods["feat"].concentration == pytest.approx(expected, rel=1e-5) and expected > 1.2
    assert "| feat | feat_t |" in report.markdown() and f"{expected:.3g} |" in report.markdown()


def test_layer_pull_on_hand_made_norms():
    """The q90 per-layer ratio, not divided by the whole-student one; layers the GT loss misses are left out."""
    conv = torch.tensor([True, True, True, True])
    assert layer_pull(torch.tensor([4.0, 1, 1, 0]), torch.ones(4), conv) == pytest.approx(2.0)
    assert layer_pull(torch.tensor([100.0, 9, 0, 0]), torch.tensor([0.0, 1, 1, 1]), conv) == pytest.approx(3.0)
    assert layer_pull(torch.tensor([1.0, 0, 0, 0]), torch.tensor([0.0, 1, 1, 1]), conv) is None
    # it scales with the method's weight: 10x the gradient is 10x the pull
    assert layer_pull(torch.tensor([400.0, 100, 100, 0]), torch.ones(4), conv) == pytest.approx(20.0)


def test_layer_cap_lowers_a_scale_and_never_raises_it():
    """scale = min(share * gt / grad, layer_share / layer_pull); no cap or no measured pull: the share alone."""
    shares = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}
    grads = {"a": 2.0, "b": 2.0, "c": 2.0, "d": 2.0}
    pulls = {"a": 8.0, "b": 0.1, "c": 8.0, "d": None}
    caps = {"a": 0.5, "b": 0.5, "c": None, "d": 0.5}
    scales = method_scales(4.0, grads, shares, "auto", pulls, caps)
    assert scales == {"a": pytest.approx(0.0625), "b": 2.0, "c": 2.0, "d": 2.0}
    assert method_scales(4.0, grads, shares, "paper", pulls, caps) == dict.fromkeys(grads, 1.0)


def test_measured_layer_cap_holds_the_feature_methods_pull_per_layer():
    """The feature term's pull on its q90 layer after scaling is the cap; the output term (no cap) keeps its share;
    the report round-trips and an older report without the layer fields still loads (resume of an earlier run)."""
    model = TwoConvModel()
    batch = {"img": torch.randn(2, 2, 4, 4)}
    shares, caps = {"out": 1.0, "feat": 1.0}, {"out": None, "feat": 0.05}
    report = measure_balance(model, FeatureVsOutputCriterion(), [batch], shares, "auto", layer_shares=caps)
    feat, out = report.methods["feat"], report.methods["out"]
    assert feat.layer_share == 0.05 and feat.layer_pull * feat.scale == pytest.approx(0.05)
    assert feat.measured_share * feat.scale < 1.0
    assert out.layer_share is None and out.measured_share * out.scale == pytest.approx(1.0)
    assert "| feat | feat_t |" in report.markdown() and "| 0.05 |" in report.markdown()
    # the per-epoch update (detail=False) measures the pull too, so the cap holds in every epoch
    update = measure_balance(model, FeatureVsOutputCriterion(), [batch], shares, "auto", False, layer_shares=caps)
    assert update.scales == pytest.approx(report.scales)
    data = report.to_dict()
    assert BalanceReport.from_dict(data) == report
    for method in data["methods"].values():
        del method["layer_share"], method["layer_pull"]
    assert BalanceReport.from_dict(data).methods["feat"].layer_share is None


def test_hardest_pulled_names_the_layers_the_gt_loss_does_not_train_first():
    from yolokd.engine.balance_grads import hardest_pulled

    conv = torch.tensor([True, True, True, False])
    names = ["a", "b", "c", "bias"]
    method, gt = torch.tensor([4.0, 9.0, 1.0, 100.0]), torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert hardest_pulled(method, gt, conv, names, count=2) == [("b", 3.0, 0.0), ("a", 2.0, 1.0)]


def test_the_balance_table_names_the_layers_a_feature_method_pulls_hardest():
    model = TwoConvModel()
    batch = {"img": torch.randn(2, 2, 4, 4)}
    report = measure_balance(model, FeatureVsOutputCriterion(), [batch], {"out": 1.0, "feat": 1.0}, "auto")
    assert [layer[0] for layer in report.methods["feat"].hardest_layers] == ["conv1.weight"]
    assert "| feat | conv1.weight " in report.markdown()
    assert BalanceReport.from_dict(report.to_dict()) == report
