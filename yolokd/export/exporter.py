"""``yolokd export``: Ultralytics' exporter, then the plan and sidecar of engines, the checks, and the report.

The student in ``best.pt`` is a plain Ultralytics model, so the export is Ultralytics' own (``YOLO(model).export``).
What yolokd adds: target profiles, INT8 calibration on the *train* split (Ultralytics calibrates on ``val`` unless
told), the raw ``.plan`` + ``.trt.json`` sidecar of engines, files for an engine built on the device, the checks
(graph, detections matched with PyTorch's, mAP delta, no KD residue) and ``<stem>.export.{json,md}`` next to the
exported file. Segment, pose and OBB students get the same checks, on their detections (OBB: rotated boxes matched
by ProbIoU) and their box mAP. An INT8 ONNX is a Q/DQ ONNX made by NVIDIA ModelOpt (``yolokd.quant.int8_export``):
PTQ here, or the learned ranges of a QAT checkpoint; it adds the Q/DQ coverage check and the fake-quant mAP.
"""

from __future__ import annotations

import importlib.util
import time
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from yolokd.export import images, plan, trt_compat
from yolokd.export.engine_files import cuda_device, device_build_files, engine_files
from yolokd.export.export_args import plain_export_args, ultralytics_args
from yolokd.export.hardware import package_versions
from yolokd.export.profiles import ExportOptions, resolve_options
from yolokd.export.report import write_export_report
from yolokd.export.verify import run_checks
from yolokd.quant import int8_export

REPORT_SCHEMA = "yolokd.export/1"
VERSIONED = ("yolokd", "ultralytics", "torch", "onnx", "onnxruntime", "onnxslim", "tensorrt", "numpy")


@dataclass
class ExportResult:
    """What ``export_model`` wrote and found.

    Attributes:
        path (Path): the exported model (``.onnx`` or ``.engine``).
        files (dict[str, Path]): every file written (model, plan, sidecar, build recipe, calibration, reports).
        report (dict): the export report (also in ``files["report_json"]``).
        problems (list[str]): failed checks (empty: every check passed or was skipped).
        warnings (list[str]): loud findings that do not fail the export (e.g. an INT8 mAP drop above 1 point).
    """

    path: Path
    files: dict[str, Path]
    report: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def export_model(model: str | Path, profile: str | Path | None = None, **overrides: Any) -> ExportResult:
    """Export ``model`` (a ``.pt``) with a profile and key=value overrides; run the checks; write the report."""
    from ultralytics import YOLO

    options = resolve_options(profile, **overrides)
    model = Path(model)
    if model.suffix != ".pt" or not model.is_file():
        raise FileNotFoundError(f"model: {model} is not an existing .pt checkpoint")
    if options.format == "engine":
        trt = plan.import_tensorrt()
        if not torch.cuda.is_available():
            raise plan.TensorRTUnavailableError("format=engine builds on a CUDA GPU and torch sees none here")
    qat = int8_export.check_request(options, model)  # reads the checkpoint; a QAT one sets options.int8
    if options.format == "engine":
        modelopt = importlib.util.find_spec("modelopt") is not None
        problem = trt_compat.ultralytics_engine_problem(trt_compat.capabilities(trt), options.precision, modelopt)
        if problem:
            raise plan.TensorRTUnavailableError(problem)
    student = YOLO(str(model))
    start = time.perf_counter()
    exporting, quantization = student, None
    if int8_export.makes_qdq_onnx(options, qat):
        exporting, quantization = int8_export.prepare(student, model, options, qat)
    exported = Path(exporting.export(**ultralytics_args(options)))
    files = {"model": exported}
    if options.format == "engine":
        files.update(engine_files(exported, options, model))
    if options.device_build:
        files.update(device_build_files(exported, options, model))
    report = base_report(student, model, exported, options, time.perf_counter() - start, profile)
    if quantization is not None:
        report["quantization"] = quantization
    problems: list[str] = []
    warnings: list[str] = []
    if options.checks:
        report["checks"] = run_checks(student, exported, files, options, problems, warnings, exporting, quantization)
    else:
        report["checks"] = "skipped (checks=false)"
    report.update(problems=problems, warnings=warnings, passed=not problems)
    report["files"] = {name: {"path": str(path), "bytes": path.stat().st_size} for name, path in files.items()}
    files.update(write_export_report(report, exported))
    return ExportResult(exported, files, report, problems, warnings)


def base_report(student: Any, source: Path, exported: Path, options: ExportOptions, seconds: float, profile) -> dict:
    """Source model, options, precision and versions (the checks and files are added after)."""
    from ultralytics.utils.torch_utils import get_flops

    height, width = images.image_size(options.imgsz)
    return {
        "schema": REPORT_SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "model": str(source),
            "architecture": student.model.yaml.get("yaml_file"),
            "classes": len(student.names),
            "parameters": sum(p.numel() for p in student.model.parameters()),
            "gflops": round(get_flops(deepcopy(student.model).fuse(verbose=False), [height, width]), 3),
            "imgsz": [height, width],
        },
        "exported": str(exported),
        "profile": str(profile) if profile else None,
        "options": asdict(options),
        "precision": options.precision,
        "file_precision": "fp32" if options.device_build else options.precision,
        "export_seconds": round(seconds, 2),
        "versions": package_versions(VERSIONED),
    }


# cuda_device and plain_export_args live in engine_files and export_args; tests import them from here too
__all__ = ["ExportResult", "base_report", "cuda_device", "export_model", "plain_export_args", "ultralytics_args"]
