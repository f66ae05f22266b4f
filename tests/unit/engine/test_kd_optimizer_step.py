"""The KD optimiser step with a GradScaler: normal steps, and no crash when KD modules got no gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolokd.engine.trainer import step_kd_optimizer


def _setup():
    module = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # the CUDA GradScaler's logic, on the CPU
    return module, optimizer, scaler


def test_no_gradient_skips_the_step_instead_of_failing():
    """KD factor 0: the KD modules are not in the graph. GradScaler.step would raise 'No inf checks were recorded'."""
    student = nn.Parameter(torch.ones(1))
    module, optimizer, scaler = _setup()
    scaler.scale(student.sum()).backward()  # the student's loss was scaled and backpropagated; KD was off
    with pytest.raises(AssertionError, match="No inf checks were recorded"):  # what the bare calls do
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
    module, optimizer, scaler = _setup()
    scaler.scale(student.sum()).backward()
    before = module.weight.detach().clone()
    assert step_kd_optimizer(optimizer, scaler, lr=0.5) is False
    assert torch.equal(module.weight, before)


def test_step_unscales_follows_the_student_lr_and_clears_grads():
    module, optimizer, scaler = _setup()
    before = module.weight.detach().clone()
    scaler.scale(module(torch.ones(1, 2)).sum()).backward()  # d/dw = [1, 1], scaled by 1024
    assert step_kd_optimizer(optimizer, scaler, lr=0.5) is True
    scaler.update()
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert torch.allclose(module.weight, before - 0.5 * torch.ones(1, 2))  # unscaled gradient, lr 0.5
    assert module.weight.grad is None or not module.weight.grad.any()
