"""``YOLO.export`` arguments for a set of export options, and for the plain export the graph is compared with."""

from __future__ import annotations

from typing import Any

from yolokd.export.profiles import ExportOptions


def ultralytics_args(options: ExportOptions) -> dict[str, Any]:
    """``YOLO.export`` keyword arguments for the options (precision as Ultralytics' ``quantize``)."""
    quantize = None if options.device_build else {"int8": 8, "fp16": 16}.get(options.precision)
    args: dict[str, Any] = dict(
        format=options.format,
        imgsz=options.imgsz,
        batch=options.batch,
        dynamic=options.dynamic,
        simplify=options.simplify,
        nms=options.nms,
        verbose=False,
    )
    if options.opset is not None:
        args["opset"] = options.opset
    if quantize is not None:
        args["quantize"] = quantize
    if options.format == "engine":
        args.update(workspace=options.workspace, device=options.device or "0")
    elif options.device is not None:
        args["device"] = options.device
    if quantize == 8:  # Ultralytics calibrates on args.split ("val" unless set): keep validation images unseen
        args.update(data=options.data, fraction=options.fraction, split=options.calib_split)
    return args


def plain_export_args(options: ExportOptions) -> dict[str, Any] | None:
    """``YOLO.export`` arguments that make a plain model's ONNX the way the export's ONNX was made; None: no such ONNX.

    An engine (any precision) and an ONNX for a device build hold an FP32 ONNX (Ultralytics traces FP32 and TensorRT
    applies the precision): the plain export is FP32 on the CPU. Re-using quantize=16 with format=onnx on a CPU
    would run Ultralytics' CPU FP16 conversion and add Cast nodes that the engine's ONNX does not have. An FP16 ONNX
    is compared with the same quantize=16 on the same device (same conversion on both sides). An INT8 ONNX is not
    compared (its Q/DQ graph needs a calibration run of its own).
    """
    args = ultralytics_args(options)
    fp32_onnx = options.format == "engine" or options.device_build
    if not fp32_onnx and options.precision == "int8":
        return None
    args["format"] = "onnx"
    for key in ("workspace", "data", "fraction", "split") if fp32_onnx else ("workspace",):
        args.pop(key, None)
    if fp32_onnx:
        args.pop("quantize", None)
        args.pop("device", None)
    return args


__all__ = ["plain_export_args", "ultralytics_args"]
