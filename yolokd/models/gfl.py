"""The GFL head (Generalized Focal Loss, Li et al., NeurIPS 2020, https://arxiv.org/abs/2006.04388) as an
Ultralytics module: ``GFLDetect`` in a model YAML's last row, ``[[P3, P4, P5], 1, GFLDetect, [nc, stacked_convs]]``.

mmdetection's ``GFLHead``: a cls and a box tower of ``stacked_convs`` 3x3 conv + GroupNorm + ReLU shared by every
level, a 3x3 classifier whose sigmoid is the joint class-IoU quality score, a 3x3 box predictor giving a general
distribution of R bins per side, scaled per level by a learnable ``Scale``. Trained with QFL + DFL + GIoU on ATSS
positives (:class:`~yolokd.models.gfl_loss.GFLLoss`). The name ends in "Detect" because Ultralytics guesses a model's
task from its head's class name.
"""

from __future__ import annotations

from torch import nn

from yolokd.models.dense_head import SharedTowerDetect
from yolokd.models.gfl_loss import GFLLoss


class GFLDetect(SharedTowerDetect):
    """GFL head: shared GN towers, QFL classifier, general-distribution box predictor (R bins per side).

    Args:
        nc: C, number of classes.
        stacked_convs: stages per tower (GFL: 4).
        reg_max: R, bins per side (from the model YAML's ``reg_max``, default 16).
        ch: widths of the input levels (all equal).
    """

    family = "GFL"

    def build_criterion(self, model: nn.Module) -> GFLLoss:
        """GFL's loss (QFL + DFL + GIoU, ATSS)."""
        return GFLLoss(model)
