"""Tiny dense models for unit tests: five stride-2 Convs and a GFL, FCOS or RetinaNet head on three 16-wide levels
(strides 8, 16, 32)."""

from __future__ import annotations

import torch
from ultralytics.cfg import get_cfg

from yolokd.models import DenseDetectionModel

TINY_GFL = {
    "nc": 3,
    "backbone": [
        [-1, 1, "Conv", [8, 3, 2]],
        [-1, 1, "Conv", [8, 3, 2]],
        [-1, 1, "Conv", [16, 3, 2]],  # 2 stride 8
        [-1, 1, "Conv", [16, 3, 2]],  # 3 stride 16
        [-1, 1, "Conv", [16, 3, 2]],  # 4 stride 32
    ],
    "head": [[[2, 3, 4], 1, "GFLDetect", ["nc", 2]]],
}


def tiny_gfl(seed: int = 0, stacked_convs: int = 2) -> DenseDetectionModel:
    """The tiny GFL model with Ultralytics' default train args attached (what its loss reads)."""
    torch.manual_seed(seed)
    cfg = {**TINY_GFL, "head": [[[2, 3, 4], 1, "GFLDetect", ["nc", stacked_convs]]]}
    model = DenseDetectionModel(cfg, verbose=False)
    model.args = get_cfg()
    return model


def tiny_fcos(seed: int = 0, stacked_convs: int = 2) -> DenseDetectionModel:
    """The tiny backbone with an FCOS head (``reg_max: 1``), Ultralytics' default train args attached."""
    torch.manual_seed(seed)
    cfg = {**TINY_GFL, "reg_max": 1, "head": [[[2, 3, 4], 1, "FCOSDetect", ["nc", stacked_convs]]]}
    model = DenseDetectionModel(cfg, verbose=False)
    model.args = get_cfg()
    return model


def tiny_retinanet(seed: int = 0, stacked_convs: int = 2) -> DenseDetectionModel:
    """The tiny backbone with a RetinaNet head (``reg_max: 1``, 9 anchors per cell), Ultralytics' default train args."""
    torch.manual_seed(seed)
    cfg = {**TINY_GFL, "reg_max": 1, "head": [[[2, 3, 4], 1, "RetinaNetDetect", ["nc", stacked_convs]]]}
    model = DenseDetectionModel(cfg, verbose=False)
    model.args = get_cfg()
    return model


def gt_batch(images: int = 2) -> dict[str, torch.Tensor]:
    """Three GT boxes (normalised xywh) on two 64 px images: two on image 0, one on image 1."""
    return {
        "batch_idx": torch.tensor([0.0, 0.0, 1.0])[: images + 1],
        "cls": torch.tensor([[0.0], [2.0], [1.0]]),
        "bboxes": torch.tensor([[0.3, 0.3, 0.3, 0.4], [0.7, 0.6, 0.4, 0.5], [0.5, 0.5, 0.8, 0.7]]),
        "img": torch.rand(images, 3, 64, 64),
    }
