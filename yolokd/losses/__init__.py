"""Distillation methods, one module each; ``LOSSES`` is the index of them by their config name."""

from yolokd.losses.base import DistillLoss, LossParams
from yolokd.losses.bckd import BCKDLoss
from yolokd.losses.mimic import MimicLoss

LOSSES: dict[str, type[DistillLoss]] = {cls.name: cls for cls in (BCKDLoss, MimicLoss)}

__all__ = ["LOSSES", "DistillLoss", "LossParams"]
