"""G-DetKD's head transfer (§4.3.1): the teacher's head tensors copied into the student's where name and shape match.

Yao et al., ICCV 2021, https://arxiv.org/abs/2108.07482. Called once on fresh runs through
``GDetKDLoss.init_student`` (``init_head_from_teacher``); :mod:`yolokd.losses.gdetkd` says what differs from the
paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class HeadTransfer:
    """What ``transfer_head`` did: names of the copied tensors, and of the kept ones with the reason."""

    copied: list[str]
    skipped: list[str]


@torch.no_grad()
def transfer_head(teacher_state: dict[str, Tensor], student_state: dict[str, Tensor]) -> HeadTransfer:
    """Copy, in place, every teacher tensor whose name and shape match the student's.

    Args:
        teacher_state: the teacher head's parameters and buffers by name (``HeadAdapter.head_state()``).
        student_state: the student head's, sharing storage with the student (the copies land in the model).
    """
    copied, skipped = [], []
    for name, tensor in student_state.items():
        source = teacher_state.get(name)
        if source is None:
            skipped.append(f"{name} (not in the teacher)")
        elif source.shape != tensor.shape:
            skipped.append(f"{name} (student {tuple(tensor.shape)}, teacher {tuple(source.shape)})")
        else:
            tensor.copy_(source)
            copied.append(name)
    return HeadTransfer(copied, skipped)


__all__ = ["HeadTransfer", "transfer_head"]
