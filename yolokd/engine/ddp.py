"""Multi-GPU distillation on Ultralytics' own DDP launcher: what a distillation run adds to it.

Ultralytics trains on ``device=0,1,...`` by pickling the trainer class, its args and callbacks
(``ultralytics/utils/dist.py``), starting one process per GPU with ``torch.distributed.run`` and rebuilding the
trainer in each rank from those args. The student is wrapped in ``DistributedDataParallel`` (gradients averaged in
its backward, SyncBN is not used), rank 0 validates, saves and logs. yolokd adds, in each rank:

- the experiment: the launcher carries Ultralytics args only, and it deletes the run folder (where ``distill.yaml``
  is) before the ranks start, so the launching process puts the experiment in the environment variable
  ``YOLOKD_DDP_EXPERIMENT`` (YAML) for the ranks it starts; a resumed run reads it from its ``kd_state.pt`` as always;
- its own frozen teacher, and the KD modules built from the experiment, then overwritten with rank 0's parameters and
  buffers (:func:`broadcast_state`), so every rank starts from the same aligners;
- the KD modules' gradients averaged over the ranks before the KD optimiser steps (:func:`average_gradients`). They
  are not wrapped in ``DistributedDataParallel``: they run inside the student's forward (in its criterion), not as a
  module forward of their own, and some (G-DetKD's per-level adapters) are used or not depending on the batch, so
  one all-reduce of every KD gradient (zeros where a rank had none) per optimiser step replaces DDP's reducer;
- the KD balance: each rank measures its own share of the same global batches a 1-process run measures; each
  measured gradient is summed over the ranks before its norm is taken (:func:`sum_gradients`: the norm of the global
  batch's gradient, which a mean of per-rank norms is not) and the values are averaged (:func:`average_sums`), so
  every rank gets identical scales. They differ from a 1-process run's as far as the per-rank batch changes the
  forward (BatchNorm statistics of fewer images; 14-29% on the test's untrained pair, 4 vs 8 images);
- G-DetKD's memory queue gathers the teacher representations of every rank (``yolokd.losses.gdetkd_rois``);
- ``kd_state.pt`` is written by rank 0 only (Ultralytics calls ``save_model`` on rank 0 only).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import yaml
from torch import distributed as dist
from torch import nn

EXPERIMENT_ENV = "YOLOKD_DDP_EXPERIMENT"


def distributed() -> bool:
    """True inside a DDP rank of a run on more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of DDP ranks (1 outside DDP)."""
    return dist.get_world_size() if distributed() else 1


def rank() -> int:
    """This process's DDP rank (0 outside DDP)."""
    return dist.get_rank() if distributed() else 0


def collective_device() -> torch.device:
    """Where tensors for a collective must live: the current GPU on NCCL, the CPU on gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextmanager
def experiment_for_ranks(experiment: dict[str, Any]) -> Iterator[None]:
    """Put the experiment (``Experiment.to_dict()``) in the environment of the DDP ranks started inside."""
    previous = os.environ.get(EXPERIMENT_ENV)
    os.environ[EXPERIMENT_ENV] = yaml.safe_dump(experiment, sort_keys=False)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(EXPERIMENT_ENV, None)
        else:
            os.environ[EXPERIMENT_ENV] = previous


def experiment_from_launcher() -> dict[str, Any] | None:
    """The experiment the launching process put in the environment (None when there is none)."""
    text = os.environ.get(EXPERIMENT_ENV)
    return yaml.safe_load(text) if text else None


def broadcast_state(module: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer of `module` with rank `src`'s (in place); no-op outside DDP."""
    if not distributed():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.device.type == collective_device().type:
                dist.broadcast(tensor, src=src)
            else:  # e.g. a CPU buffer on an NCCL run
                staged = tensor.to(collective_device())
                dist.broadcast(staged, src=src)
                tensor.copy_(staged)


def average_gradients(params: list[nn.Parameter]) -> bool:
    """Average the gradients of `params` over the ranks, in one all-reduce; False when no rank had any.

    A parameter without a gradient on a rank (the batch did not use it) counts as a zero gradient there, as DDP's
    ``find_unused_parameters`` counts it; after the call every parameter has the same ``.grad`` on every rank (or,
    when no rank had a gradient, none). One host sync (the any-gradient flag), once per optimiser step.
    """
    if not params:
        return False
    device = collective_device()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    pieces = [grad.reshape(-1).to(device, torch.float32) for grad in grads]
    any_grad = torch.tensor([float(any(p.grad is not None for p in params))], device=device)
    flat = torch.cat([*pieces, any_grad])
    dist.all_reduce(flat)
    if flat[-1].item() == 0:
        return False
    flat = flat[:-1] / dist.get_world_size()
    offset = 0
    for param in params:
        count = param.numel()
        param.grad = flat[offset : offset + count].view_as(param).to(param.device, param.dtype)
        offset += count
    return True


def any_rank(flags: torch.Tensor) -> torch.Tensor:
    """Elementwise OR of a bool tensor over the ranks (the same tensor outside DDP)."""
    if not distributed():
        return flags
    values = flags.to(collective_device(), torch.int32)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values.to(flags.device).bool()


def every_rank(flag: bool) -> bool:
    """True when `flag` is True on every rank (`flag` outside DDP)."""
    return not bool(any_rank(torch.tensor([not flag])).item())


def sum_gradients(grads: list[torch.Tensor | None], params: list[nn.Parameter]) -> list[torch.Tensor]:
    """Each parameter's gradient summed over the ranks (None counts as zeros), in one all-reduce; the KD balance
    measures the norm of this sum: the global batch's gradient, as a 1-process run on the whole batch measures it."""
    if not distributed():
        return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]
    device = collective_device()
    flat = torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).detach().reshape(-1).to(device, torch.float32)
            for g, p in zip(grads, params, strict=True)
        ]
    )
    dist.all_reduce(flat)
    return list(torch.split(flat, [p.numel() for p in params]))


def average_sums(sums: dict[str, list[float | None]]) -> dict[str, list[float | None]]:
    """The balance measurement's per-term [value sum, gradient-norm sum], averaged over the ranks.

    The gradient norms are already global (:func:`sum_gradients`) and equal on every rank; the values are each rank's
    own (its share of the batches) and are averaged. Every rank passes the same keys in the same order; a norm that
    was not measured (None) stays None. The result is identical on every rank.
    """
    if not distributed():
        return sums
    rows = [[value, math.nan if norm is None else norm] for value, norm in sums.values()]
    table = torch.tensor(rows, dtype=torch.float64, device=collective_device())
    dist.all_reduce(table)
    totals = (table / dist.get_world_size()).tolist()
    return {
        name: [value, None if sums[name][1] is None else norm] for name, (value, norm) in zip(sums, totals, strict=True)
    }


def balance_slice(batch_index: int, batch_size: int) -> range:
    """Dataset indices this rank measures for global balance batch `batch_index` (all of them outside DDP).

    Rank r takes the r-th equal share of the global batch a 1-process run measures, so the ranks together measure the
    same images; a remainder of ``batch_size % world_size`` images is dropped, as Ultralytics' per-rank batch drops it.
    """
    local = max(batch_size // world_size(), 1)
    start = batch_index * batch_size + rank() * local
    return range(start, start + local)


__all__ = [
    "EXPERIMENT_ENV",
    "any_rank",
    "average_gradients",
    "average_sums",
    "balance_slice",
    "broadcast_state",
    "collective_device",
    "distributed",
    "every_rank",
    "experiment_for_ranks",
    "experiment_from_launcher",
    "rank",
    "sum_gradients",
    "world_size",
]
