"""GFL's loss: QFL and DFL on hand-made tensors, and the criterion on a tiny GFL model."""

import math

import pytest
import torch
from dense_models import gt_batch, tiny_gfl
from ultralytics.utils.loss import DFLoss

from yolokd.models import GFLLoss, quality_focal_loss


def test_qfl_known_values():
    """x = 0: positive with IoU target 0.8 -> ln2 * 0.3² = 0.0623832; negative -> ln2 * 0.5² = 0.1732868."""
    loss = quality_focal_loss(torch.zeros(2), torch.tensor([0.8, 0.0]))
    assert torch.allclose(loss, torch.tensor([math.log(2) * 0.09, math.log(2) * 0.25]), atol=1e-7)


def test_qfl_gradient_flows_through_the_modulating_factor():
    """dQFL/dx at x = 0, y = 0.8 is (σ - y)·0.09 - ln2·2·0.3·σ(1-σ) = -0.1309721 (detached factor: -0.027)."""
    logits = torch.zeros(1, requires_grad=True)
    quality_focal_loss(logits, torch.tensor([0.8])).sum().backward()
    assert logits.grad.item() == pytest.approx(-0.3 * 0.09 - math.log(2) * 2 * 0.3 * 0.25, abs=1e-6)


def test_qfl_is_zero_with_zero_gradient_when_the_score_is_its_target():
    """σ(x) == y: loss and gradient both vanish (β = 2)."""
    target = torch.tensor([0.2, 0.7, 0.0001])
    logits = torch.logit(target).requires_grad_(True)
    loss = quality_focal_loss(logits, target).sum()
    loss.backward()
    assert loss.item() == pytest.approx(0, abs=1e-7) and logits.grad.abs().max().item() < 1e-6


def test_dfl_matches_mmdetection_formula():
    """Target 1.3 over 4 bins: -(0.7 log p1 + 0.3 log p2), the mean over sides (Ultralytics' DFLoss, which GFL uses)."""
    logits = torch.tensor([[0.5, 1.0, -0.2, 0.3]]).repeat(4, 1)  # 4 sides of one anchor
    log_p = torch.log_softmax(logits[0], 0)
    expected = -(0.7 * log_p[1] + 0.3 * log_p[2])
    assert DFLoss(4)(logits, torch.full((1, 4), 1.3)).item() == pytest.approx(expected.item(), abs=1e-6)


def _criterion_inputs(seed: int = 0):
    model = tiny_gfl(seed).train()
    batch = gt_batch()
    return model, GFLLoss(model), model(batch["img"]), batch


def test_criterion_terms_are_named_finite_and_reach_the_head():
    """Loss vector (GIoU, QFL, DFL) x batch size, items named as Ultralytics' detection loss; gradients on the head."""
    model, criterion, preds, batch = _criterion_inputs()
    loss, items = criterion(preds, batch)
    assert list(items) == ["box_loss", "cls_loss", "dfl_loss"] and loss.shape == (3,)
    assert torch.isfinite(loss).all() and (loss > 0).all()
    assert torch.allclose(loss, torch.stack(list(items.values())) * 2)
    loss.sum().backward()
    head = model.model[-1]
    assert head.cls_pred.weight.grad.abs().sum() > 0 and head.box_pred.weight.grad.abs().sum() > 0


def test_uniform_distributions_give_dfl_ln_bins():
    """Bin logits all 0 and σ = 0.5 everywhere: every positive's DFL is ln R whatever its target -> 0.25 ln 16."""
    _, criterion, preds, batch = _criterion_inputs()
    preds = {**preds, "boxes": torch.zeros_like(preds["boxes"]), "scores": torch.zeros_like(preds["scores"])}
    _, items = criterion(preds, batch)
    assert items["dfl_loss"].item() == pytest.approx(0.25 * math.log(16), abs=1e-5)


def test_empty_batch_is_finite_with_gradients():
    """No GT box: QFL pushes every score down, GIoU and DFL are 0; backward works."""
    model, criterion, preds, batch = _criterion_inputs()
    empty = {**batch, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    loss, items = criterion(preds, empty)
    assert items["box_loss"] == 0 and items["dfl_loss"] == 0 and items["cls_loss"] > 0
    loss.sum().backward()
    assert model.model[-1].cls_pred.weight.grad.abs().sum() > 0
