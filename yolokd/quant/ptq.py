"""Post-training quantization (PTQ) of a trained student to INT8 fake-quant, ready for a Q/DQ ONNX export.

The quantizer is Ultralytics' own QAT preparation (``ultralytics.utils.torch_utils.prepare_qat``: NVIDIA ModelOpt's
``INT8_DEFAULT_CFG``, the head's output convolutions and DFL kept in float), run here on letterboxed images of the
calibration split instead of augmented training batches. PTQ and QAT therefore produce the same graph: the same
Q/DQ placement, scheme and float layers, differing only in the weights and ranges. Ultralytics then exports the
fake-quant model through its QAT path (``torch.onnx.export`` emits each enabled quantizer as QuantizeLinear +
DequantizeLinear).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

CALIBRATION_BATCH = 8
"""Images per calibration forward pass (max calibration: the result does not depend on it)."""
SCHEME = (
    "INT8 symmetric (zero point 0, as TensorRT requires); weights per output channel, activations per tensor; "
    "ranges from the calibration maximum (ModelOpt INT8_DEFAULT_CFG, algorithm 'max')"
)


@dataclass
class Calibration:
    """The images PTQ measured activation ranges on.

    Attributes:
        data (str): the data YAML.
        split (str): the split read (``train``: validation images stay unseen).
        images (int): images used (``calib_images`` spread evenly over the split, after ``fraction``).
        batches (int): forward passes of ``CALIBRATION_BATCH`` images.
        method (str): ModelOpt's calibration algorithm.
        files (list[str]): the image files, in order.
    """

    data: str
    split: str
    images: int
    batches: int
    method: str = "max"
    files: list[str] = field(default_factory=list)


def calibration_images(
    data: str | Path, split: str, fraction: float, count: int, imgsz: tuple[int, int]
) -> tuple[np.ndarray, list[Path]]:
    """``count`` images spread evenly over the first ``fraction`` of ``split``, letterboxed as Ultralytics predicts.

    Returns:
        (np.ndarray, list[Path]): uint8 images (N, 3, h, w), RGB; and their files.
    """
    from yolokd.export import images

    files = images.split_images(data, split)
    files = images.pick(files[: max(1, round(len(files) * fraction))], count)
    return images.letterbox(images.read_images(files), imgsz), files


def quantize_ptq(model: nn.Module, batch: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> nn.Module:
    """Insert INT8 fake-quantization into `model` (in place) and calibrate its ranges on `batch`.

    Args:
        model (nn.Module): a float Ultralytics DetectionModel.
        batch (np.ndarray): calibration images (N, 3, h, w), uint8 RGB, letterboxed.
        batch_size (int): images per forward pass.

    Returns:
        (nn.Module): the same model, carrying ModelOpt quantizers (``ultralytics.utils.torch_utils.is_qat`` is true).
    """
    from ultralytics.utils.torch_utils import prepare_qat

    device = next(model.parameters()).device
    chunks = [torch.from_numpy(batch[start : start + batch_size]) for start in range(0, len(batch), batch_size)]
    return prepare_qat(model, chunks, lambda images: images.to(device).float() / 255, batches=len(chunks))
