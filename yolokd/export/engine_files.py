"""Files beside a TensorRT export: the raw ``.plan`` + ``.trt.json`` sidecar of an engine built here, and the recipe
(``.build.json``, plus ``.calib.npy`` for INT8) of an engine to be built on the device from the exported ONNX.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from yolokd.export import images, plan
from yolokd.export.profiles import ExportOptions


def cuda_device(device: str | int | None) -> torch.device:
    """The CUDA device an engine was built on: None or "" -> cuda:0 (Ultralytics' default), 1 -> cuda:1.

    A missing ``device=`` once became ``torch.device("cuda:None")`` and failed after the engine was written.
    """
    text = "0" if device is None or str(device).strip() == "" else str(device).strip()
    return torch.device(f"cuda:{text}" if text.isdigit() else text)


def engine_files(engine: Path, options: ExportOptions, source: Path) -> dict[str, Path]:
    """Write ``<stem>.plan`` (no Ultralytics header) and ``<stem>.trt.json`` (device, TensorRT, I/O, precision)."""
    trt = plan.import_tensorrt()
    plan_path = plan.write_plan(engine)
    plan_bytes = plan_path.read_bytes()
    deserialized = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_bytes)
    device = cuda_device(options.device)
    major, minor = torch.cuda.get_device_capability(device)
    gpu = {"gpu_name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}
    sidecar = plan.make_sidecar(
        plan_bytes, plan.current_device(gpu), options.precision, plan.engine_io(deserialized), str(source)
    )
    sidecar.update(
        imgsz=list(images.image_size(options.imgsz)),
        batch=options.batch,
        dynamic=options.dynamic,
        workspace_gib=options.workspace,
    )
    return {"plan": plan_path, "sidecar": plan.write_sidecar(plan.sidecar_path(engine), sidecar)}


def device_build_files(onnx_path: Path, options: ExportOptions, source: Path) -> dict[str, Path]:
    """For an engine built on the device: ``<stem>.build.json`` (the recipe) and, for INT8, ``<stem>.calib.npy``."""
    files: dict[str, Path] = {}
    height, width = images.image_size(options.imgsz)
    calibration = None
    if options.int8:
        split = images.split_images(options.data, options.calib_split)
        split = split[: max(1, round(len(split) * options.fraction))]
        chosen = images.pick(split, options.calib_images)
        calibration = onnx_path.with_name(f"{onnx_path.stem}.calib.npy")
        np.save(calibration, images.letterbox(images.read_images(chosen), (height, width)))
        files["calibration"] = calibration
    recipe = {
        "onnx": onnx_path.name,
        "precision": options.precision,
        "imgsz": [height, width],
        "batch": options.batch,
        "dynamic": options.dynamic,
        "workspace_gib": options.workspace,
        "calibration": calibration.name if calibration else None,
        "calibration_split": options.calib_split if calibration else None,
        "description": options.description,
        "source": str(source),
    }
    files["build_recipe"] = onnx_path.with_name(f"{onnx_path.stem}.build.json")
    files["build_recipe"].write_text(json.dumps(recipe, indent=1) + "\n")
    return files


__all__ = ["cuda_device", "device_build_files", "engine_files"]
