"""Distillation methods, one module each; ``LOSSES`` is the index of them by their config name."""

from yolokd.losses.anglekd import AngleKDLoss
from yolokd.losses.base import DistillLoss, LossParams
from yolokd.losses.bckd import BCKDLoss
from yolokd.losses.crosskd import CrossKDLoss
from yolokd.losses.cwd import CWDLoss
from yolokd.losses.dfd import DFDLoss
from yolokd.losses.fgd import FGDLoss
from yolokd.losses.gdetkd import GDetKDLoss
from yolokd.losses.kptkd import KeypointKDLoss
from yolokd.losses.ld import LDLoss
from yolokd.losses.maskkd import MaskKDLoss
from yolokd.losses.mgd import MGDLoss
from yolokd.losses.mimic import MimicLoss
from yolokd.losses.pgd import PGDLoss
from yolokd.losses.pkd import PKDLoss

LOSSES: dict[str, type[DistillLoss]] = {
    cls.name: cls
    for cls in (
        BCKDLoss,
        MimicLoss,
        DFDLoss,
        MGDLoss,
        PKDLoss,
        CWDLoss,
        CrossKDLoss,
        LDLoss,
        PGDLoss,
        FGDLoss,
        GDetKDLoss,
        MaskKDLoss,
        AngleKDLoss,
        KeypointKDLoss,
    )
}

__all__ = ["LOSSES", "DistillLoss", "LossParams"]
