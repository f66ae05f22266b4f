"""Dense-detector families as Ultralytics modules: heads, their losses and assigners, and the model class.

``DenseDetectionModel`` builds a model YAML whose last row names a head of ``DENSE_HEADS`` (``GFLDetect``,
``FCOSDetect``, ``RetinaNetDetect``); model YAMLs ship in ``yolokd/cfg/models`` and are found by name
(``gfl-yolov8n.yaml``).
"""

from yolokd.models.atss import ATSSAssigner
from yolokd.models.dense_head import SharedTowerDetect
from yolokd.models.fcos import FCOSDetect
from yolokd.models.fcos_loss import FCOSAssigner, FCOSLoss, FCOSLossWeights, centerness_target
from yolokd.models.gfl import GFLDetect
from yolokd.models.gfl_loss import GFLLoss, GFLLossWeights, quality_focal_loss
from yolokd.models.max_iou import MaxIoUAssigner, max_iou_assignment
from yolokd.models.model import (
    DENSE_HEADS,
    MODELS_DIR,
    DenseDetectionModel,
    dense_head_name,
    parse_dense_model,
    resolve_model_yaml,
)
from yolokd.models.retinanet import RetinaNetDetect
from yolokd.models.retinanet_loss import RetinaNetLoss, RetinaNetLossWeights

__all__ = [
    "DENSE_HEADS",
    "MODELS_DIR",
    "ATSSAssigner",
    "DenseDetectionModel",
    "FCOSAssigner",
    "FCOSDetect",
    "FCOSLoss",
    "FCOSLossWeights",
    "GFLDetect",
    "GFLLoss",
    "GFLLossWeights",
    "MaxIoUAssigner",
    "RetinaNetDetect",
    "RetinaNetLoss",
    "RetinaNetLossWeights",
    "SharedTowerDetect",
    "centerness_target",
    "dense_head_name",
    "max_iou_assignment",
    "parse_dense_model",
    "quality_focal_loss",
    "resolve_model_yaml",
]
