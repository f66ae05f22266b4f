"""``yolokd export ... int8=true format=onnx``: a Q/DQ ONNX, by PTQ here or from a QAT checkpoint's own ranges.

What ``yolokd.export.exporter`` asks of this module: which options make a Q/DQ ONNX, the one-line refusals before
anything is written, the fake-quant student Ultralytics exports (``prepare``), the report's ``quantization``
section, and the two checks only an INT8 ONNX has: Q/DQ coverage of its convolutions, and its mAP next to the
fake-quant PyTorch model it was exported from (ONNX Runtime's integer kernels vs ModelOpt's simulation).
"""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from yolokd.quant import layers, ptq
from yolokd.quant.backend import checkpoint_is_qat, require_modelopt

MIN_QDQ_OPSET = 13
"""DequantizeLinear takes a per-channel ``axis`` from opset 13."""
FAKE_QUANT_MAP_TOLERANCE = 0.02
"""Largest |mAP50-95 difference| between the INT8 ONNX in ONNX Runtime and the fake-quant PyTorch model it came
from. Both compute the same INT8 model; rounding of the integer kernels moves a few boxes (measured <= 0.006 on an
8-image val split, where one box is worth ~0.01)."""
QAT_CALIBRATION = (
    "ranges calibrated by Ultralytics' prepare_qat on 8 training batches when QAT started, then fixed; the weights "
    "were trained with them (nothing is calibrated at export)"
)


def makes_qdq_onnx(options: Any, qat: bool) -> bool:
    """True when the export is a Q/DQ ONNX for ONNX Runtime / TensorRT: INT8 (or a QAT checkpoint) to format=onnx.

    An INT8 engine (format=engine) stays Ultralytics' (TensorRT's calibrator on 10.x, ModelOpt's ONNX PTQ on 11.x);
    an ONNX for a device build (target=tensorrt) stays FP32 with calibration images for the device.
    """
    return options.format == "onnx" and not options.device_build and (options.int8 or qat)


def check_request(options: Any, model: Path) -> bool:
    """Refuse what cannot be exported, in one line and before anything is written; returns whether `model` is QAT.

    A QAT checkpoint exports INT8 only (its Q/DQ ranges are learned): ``options.int8`` is set for it and no
    calibration data is needed. Otherwise INT8 needs ``data=`` for calibration.
    """
    qat = checkpoint_is_qat(model)
    if qat:
        require_modelopt(f"model: {model} is a quantization-aware trained checkpoint; loading it")
        if options.half:
            raise ValueError(f"half: {model} is quantization-aware trained and exports INT8 only; drop half=true")
        if options.device_build:
            raise ValueError(
                f"target: {model} is quantization-aware trained, so its ONNX carries Q/DQ and TensorRT builds it "
                "without calibration; export it with format=onnx (target=onnxruntime) and build that file"
            )
        options.int8 = True
    elif options.int8 and not options.data:
        raise ValueError(
            f"data: int8 needs data=path/to/data.yaml for calibration (its '{options.calib_split}' split is read)"
        )
    if makes_qdq_onnx(options, qat):
        if options.opset is not None and int(options.opset) < MIN_QDQ_OPSET:
            raise ValueError(
                f"opset: an INT8 Q/DQ ONNX needs opset >= {MIN_QDQ_OPSET} (per-channel DequantizeLinear), "
                f"got {options.opset}"
            )
        require_modelopt("int8=true format=onnx (a Q/DQ ONNX)")
    return qat


def prepare(student: Any, model: Path, options: Any, qat: bool) -> tuple[Any, dict[str, Any]]:
    """The fake-quant student to export and the report's ``quantization`` section.

    Args:
        student (ultralytics.YOLO): the loaded checkpoint (float, or fake-quant for a QAT checkpoint); unchanged.
        model (Path): its file (PTQ loads a second copy to quantize).
        options (ExportOptions): data, calib_split, fraction, calib_images, imgsz.
        qat (bool): `model` is a QAT checkpoint.

    Returns:
        (ultralytics.YOLO, dict): the model to export (`student` itself for QAT) and the section.
    """
    from ultralytics import YOLO
    from ultralytics.nn.modules.head import Detect

    from yolokd.export.images import image_size

    head = student.model.model[-1]
    if not isinstance(head, Detect):
        raise ValueError(
            f"int8: yolokd quantizes detection models (a Detect head); {model} ends in {type(head).__name__}"
        )
    section: dict[str, Any] = {
        "method": "QAT" if qat else "PTQ",
        "library": f"nvidia-modelopt {importlib.metadata.version('nvidia-modelopt')}",
        "quantizer": "ultralytics.utils.torch_utils.prepare_qat (Ultralytics' QAT preparation)",
        "scheme": ptq.SCHEME,
    }
    start = time.perf_counter()
    if qat:
        quantized = student
        section["calibration"] = {"note": QAT_CALIBRATION, "qat_source": qat_source(model)}
    else:
        batch, files = ptq.calibration_images(
            options.data, options.calib_split, options.fraction, options.calib_images, image_size(options.imgsz)
        )
        quantized = YOLO(str(model))
        ptq.quantize_ptq(quantized.model, batch)
        batches = -(-len(files) // ptq.CALIBRATION_BATCH)
        calibration = ptq.Calibration(str(options.data), options.calib_split, len(files), batches)
        calibration.files = [str(file) for file in files]
        section["calibration"] = asdict(calibration)
    section["seconds"] = round(time.perf_counter() - start, 2)
    section["float_layers"] = layers.float_layer_dicts(layers.float_layers(quantized.model))
    return quantized, section


def qat_source(model: Path) -> str | None:
    """The float checkpoint a QAT run started from (its ``model`` train argument), when it is still on disk."""
    import torch

    checkpoint = torch.load(str(model), map_location="cpu", weights_only=False)
    source = (checkpoint.get("train_args") or {}).get("model")
    return str(source) if source and str(source).endswith(".pt") and Path(source).is_file() else None


def map_models(student: Any, exporting: Any, section: dict[str, Any] | None) -> tuple[Any, Any, str]:
    """The PyTorch models an export's mAP is compared with: (reference, fake-quant or None, label of the reference).

    PTQ: the float student, and the fake-quant model exported. QAT: the float checkpoint QAT started from when it
    is still on disk (the INT8 loss a user cares about), and the QAT model itself as the fake-quant one.
    """
    from ultralytics import YOLO

    if section is None:
        return student, None, "fp32 PyTorch student"
    if section["method"] == "PTQ":
        return student, exporting, "fp32 PyTorch student (before PTQ)"
    source = section["calibration"]["qat_source"]
    if source is None:
        return student, None, "fake-quant PyTorch (the QAT checkpoint; its float source is not on disk)"
    return YOLO(source), student, f"fp32 PyTorch ({source}, where QAT started)"


def coverage_check(onnx_path: Path, section: dict[str, Any]) -> dict[str, Any]:
    """Q/DQ on every convolution of the ONNX, compared with the layers the quantizer kept in float."""
    coverage = layers.qdq_coverage(onnx_path)
    kept = {layer["name"] for layer in section["float_layers"]}
    coverage["problems"] = layers.coverage_problems(coverage, kept)
    return coverage


def fake_quant_comparison(fake_quant: dict[str, float], exported: dict[str, float]) -> dict[str, Any]:
    """mAP of the fake-quant PyTorch model vs its INT8 ONNX, and whether it is beyond FAKE_QUANT_MAP_TOLERANCE."""
    keys = ("metrics/mAP50-95(B)", "metrics/mAP50(B)")
    delta = {key: exported[key] - fake_quant[key] for key in keys}
    return {
        "pytorch": {key: fake_quant[key] for key in keys},
        "delta": delta,
        "tolerance_abs": FAKE_QUANT_MAP_TOLERANCE,
        "failed": abs(delta["metrics/mAP50-95(B)"]) > FAKE_QUANT_MAP_TOLERANCE,
    }
