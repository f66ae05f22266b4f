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
import json
import tempfile
import time
from copy import deepcopy
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolokd.export import checks, images, plan, runners, trt_compat
from yolokd.export.hardware import package_versions
from yolokd.export.profiles import ExportOptions, resolve_options
from yolokd.export.report import write_export_report
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


def run_checks(
    student,
    exported: Path,
    files: dict,
    options: ExportOptions,
    problems: list,
    warnings: list,
    fake_quant=None,
    quantization: dict | None = None,
) -> dict:
    """Graph, parity and (with data) mAP; no-KD-residue comparison with a plain export. Appends to problems/warnings.

    For a Q/DQ ONNX also: Q/DQ on every convolution (``quantization``: the layers kept in float) and the mAP of
    ``fake_quant``, the fake-quant PyTorch model it was exported from.
    """
    from ultralytics.utils import LOGGER

    result: dict[str, Any] = {}
    onnx_path = exported if exported.suffix == ".onnx" else exported.with_suffix(".onnx")
    height, width = images.image_size(options.imgsz)
    nc = len(student.names)
    if onnx_path.is_file():
        result["graph"] = checks.check_onnx_graph(
            onnx_path, options.batch, (height, width), options.dynamic, nc, student.task, task_channels(student)
        )
        problems += result["graph"]["problems"]
    if quantization is not None:
        result["qdq"] = int8_export.coverage_check(onnx_path, quantization)
        problems += result["qdq"]["problems"]
    precision = "fp32" if options.device_build else options.precision
    result["parity"] = parity_check(student, exported, options, precision)
    problems += result["parity"]["problems"]
    if options.data:
        reference, fake_quant, label = int8_export.map_models(student, fake_quant, quantization)
        result["map"] = map_check(reference, exported, options, precision, fake_quant)
        result["map"]["reference"] = label
        deltas = {key: value for key, value in result["map"]["delta"].items() if "mAP50-95" in key}
        worst = min(deltas, key=deltas.get)  # the largest drop: boxes, or the task's masks / keypoints
        delta = deltas["metrics/mAP50-95(B)"]
        if result["map"]["failed"]:
            problems.append(
                f"{worst.removeprefix('metrics/')} {deltas[worst]:+.4f} vs PyTorch, beyond the {precision} tolerance"
            )
        if result["map"].get("fake_quant", {}).get("failed"):
            fake = result["map"]["fake_quant"]
            problems.append(
                f"mAP50-95 {fake['delta']['metrics/mAP50-95(B)']:+.4f} vs the fake-quant PyTorch model, beyond "
                f"+-{fake['tolerance_abs']:g}"
            )
        if result["map"]["flagged"]:
            warnings.append(f"INT8 LOSES {-100 * delta:.2f} mAP50-95 POINTS vs PyTorch (more than 1): check it")
            LOGGER.warning("!" * 80 + f"\nyolokd export: {warnings[-1]}\n" + "!" * 80)
    plain_args = plain_export_args(options)
    if options.compare_plain and onnx_path.is_file() and plain_args is not None:
        result["plain"] = plain_comparison(student, onnx_path, plain_args)
        if not result["plain"]["same_graph"]:
            problems.append(f"graph differs from a plain {result['plain']['architecture']} export: {result['plain']}")
    return result


def task_channels(student) -> int:
    """Channels a task head adds after the class scores of its raw output: mask coefficients (segment), keypoint
    values (pose), the angle (OBB); 0 for detect."""
    head = student.model.model[-1]
    return int(
        {"segment": getattr(head, "nm", 0), "pose": getattr(head, "nk", 0), "obb": getattr(head, "ne", 0)}.get(
            student.task, 0
        )
    )


def _predict(runner: runners.Runner, batch: np.ndarray) -> list[torch.Tensor]:
    """Run uint8 (N, 3, h, w) images through a runner in chunks of its fixed batch (last chunk padded); every output
    of the model (segment: predictions and prototypes), each over the N images."""
    size = runner.fixed_batch or len(batch)
    outputs = []
    for start in range(0, len(batch), size):
        chunk = batch[start : start + size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), 0)]) if len(chunk) < size else chunk
        tensor = torch.from_numpy(padded).to(runner.device).float() / 255
        outputs.append([out[: len(chunk)].float().cpu() for out in runner.all_outputs(tensor)])
    return [torch.cat(per_output) for per_output in zip(*outputs, strict=True)]


def _reference_outputs(output: Any, task: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(predictions, prototypes or None) of a PyTorch model's eval output: ``(predictions, raw)``; segment models
    ``((predictions, prototypes), raw)``."""
    if isinstance(output, (list, tuple)):
        output = output[0]  # drop the raw outputs
    protos = output[1] if task == "segment" and isinstance(output, (list, tuple)) else None
    while isinstance(output, (list, tuple)):
        output = output[0]
    return output, protos


def parity_check(student, exported: Path, options: ExportOptions, precision: str) -> dict[str, Any]:
    """The export vs the fp32 PyTorch student on real images (the val split of data, else Ultralytics' assets).

    Task models are compared on their detections (boxes, scores, classes; OBB's rotated boxes by ProbIoU), which carry
    the task's values (mask coefficients, keypoints, the angle) through the same NMS; segment models also on their
    second output, the mask prototypes (elementwise), and on the masks of the matched detections (mask IoU). The
    result's ``compared`` says what was compared.
    """
    height, width = images.image_size(options.imgsz)
    files = images.split_images(options.data, "val") if options.data else images.default_images()
    batch = images.letterbox(images.read_images(images.pick(files, options.parity_images)), (height, width))
    runner = runners.open_runner(exported, device="0" if exported.suffix == ".engine" else "cpu")
    reference_model = deepcopy(student.model).float().eval()
    if hasattr(reference_model, "end2end"):
        reference_model.end2end = options.nms is False and runner.end2end
    with torch.inference_mode():
        reference, reference_protos = _reference_outputs(
            reference_model(torch.from_numpy(batch).float() / 255), student.task
        )
    reference_end2end = bool(getattr(reference_model, "end2end", False))
    score_tolerance = checks.TOLERANCES[precision].score_abs
    exported_outputs = _predict(runner, batch)
    if reference_protos is not None and len(exported_outputs) < 2:
        raise ValueError(f"parity: {exported.name} has no prototype output (output1) for its segment model")
    result = checks.parity(
        reference,
        reference_end2end,
        exported_outputs[0],
        runner.end2end,
        len(student.names),
        max(height, width),
        conf=checks.PARITY_CONF,
        margin=score_tolerance,
        tie=score_tolerance,
        rotated=student.task == "obb",
        reference_protos=reference_protos,
        exported_protos=exported_outputs[1] if reference_protos is not None else None,
    )
    result.update(
        images=[str(f) for f in images.pick(files, options.parity_images)],
        precision=precision,
        tolerance=checks.tolerance_dict(precision),
        problems=checks.parity_problems(result, precision),
    )
    return result


def map_check(student, exported: Path, options: ExportOptions, precision: str, fake_quant=None) -> dict[str, Any]:
    """mAP of the PyTorch student and of the export on data's val split, square letterbox for both; with
    ``fake_quant`` (the fake-quant model a Q/DQ ONNX was exported from) its mAP too."""
    from ultralytics import YOLO

    height, width = images.image_size(options.imgsz)
    device = "0" if exported.suffix == ".engine" else (options.device or "cpu")
    with tempfile.TemporaryDirectory() as folder:
        common = dict(data=options.data, split="val", device=device, plots=False, verbose=False, project=folder)
        pytorch = dict(imgsz=[height, width], batch=options.batch, rect=False, **common)
        torch_metrics = student.val(name="pt", **pytorch)
        export_metrics = YOLO(str(exported), task=student.task).val(name="export", **common)
        fake_metrics = None if fake_quant is None else fake_quant.val(name="fake_quant", **pytorch)
    result = checks.map_comparison(torch_metrics.results_dict, export_metrics.results_dict, precision)
    if fake_metrics is not None:
        result["fake_quant"] = int8_export.fake_quant_comparison(fake_metrics.results_dict, export_metrics.results_dict)
    return result


def plain_comparison(student, onnx_path: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Export a plain model of the student's architecture (its own model class and parameter values, nothing of the
    distillation) with ``args`` (``plain_export_args``); compare its graph with the export's ONNX."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import intersect_dicts

    # the student's own model class: Ultralytics' DetectionModel, or yolokd's DenseDetectionModel (GFL heads)
    plain = type(student.model)(deepcopy(student.model.yaml), nc=len(student.names), verbose=False)
    # with the student's values: the ONNX simplifier folds parameters at their initial values (a GroupNorm's weight 1
    # and bias 0, a Scale of 1) away, so an untrained copy of the same architecture would export fewer nodes
    plain.load_state_dict(intersect_dicts(student.model.state_dict(), plain.state_dict()), strict=False)
    plain.names = dict(student.names)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "plain.pt"
        # the task travels in train_args: Ultralytics reads a checkpoint's task from them (and names a segment
        # model's second output from it), and would take a bare checkpoint for a detect model
        torch.save({"model": plain, "train_args": {"task": student.task}}, checkpoint)
        plain_onnx = Path(YOLO(str(checkpoint)).export(**args))
        plain_signature = checks.graph_signature(plain_onnx)
    signature = checks.graph_signature(onnx_path)
    return {
        "architecture": student.model.yaml.get("yaml_file"),
        "same_graph": signature == plain_signature,
        "exported": signature,
        "plain": plain_signature,
        "torch_parameters": {
            "student": sum(p.numel() for p in student.model.parameters()),
            "plain": sum(p.numel() for p in plain.parameters()),
        },
    }
