"""The checks of an export, run: the student and the exported model on real images and data's val split, and a plain
export of the same architecture; :mod:`yolokd.export.checks` compares what they give.

Graph (outputs, shapes, no KD residue), detections matched with PyTorch's (parity), mAP delta, and for a Q/DQ ONNX the
Q/DQ coverage and the fake-quant model's mAP. Every finding lands in the export report's ``checks`` section.
"""

from __future__ import annotations

import tempfile
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolokd.export import checks, images, runners
from yolokd.export.export_args import plain_export_args
from yolokd.export.profiles import ExportOptions
from yolokd.quant import int8_export


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
        add_map_findings(result["map"], precision, problems, warnings)
    plain_args = plain_export_args(options)
    if options.compare_plain and onnx_path.is_file() and plain_args is not None:
        result["plain"] = plain_comparison(student, onnx_path, plain_args)
        if not result["plain"]["same_graph"]:
            problems.append(f"graph differs from a plain {result['plain']['architecture']} export: {result['plain']}")
    return result


def add_map_findings(map_result: dict[str, Any], precision: str, problems: list, warnings: list) -> None:
    """Append a ``map_check`` result's failures (vs PyTorch, vs the fake-quant model) to problems and a large INT8
    mAP drop to warnings, logged loudly: it does not fail the export but must not go unseen."""
    from ultralytics.utils import LOGGER

    deltas = {key: value for key, value in map_result["delta"].items() if "mAP50-95" in key}
    worst = min(deltas, key=deltas.get)  # the largest drop: boxes, or the task's masks / keypoints
    delta = deltas["metrics/mAP50-95(B)"]
    if map_result["failed"]:
        problems.append(
            f"{worst.removeprefix('metrics/')} {deltas[worst]:+.4f} vs PyTorch, beyond the {precision} tolerance"
        )
    if map_result.get("fake_quant", {}).get("failed"):
        fake = map_result["fake_quant"]
        problems.append(
            f"mAP50-95 {fake['delta']['metrics/mAP50-95(B)']:+.4f} vs the fake-quant PyTorch model, beyond "
            f"+-{fake['tolerance_abs']:g}"
        )
    if map_result["flagged"]:
        warnings.append(f"INT8 LOSES {-100 * delta:.2f} mAP50-95 POINTS vs PyTorch (more than 1): check it")
        LOGGER.warning("!" * 80 + f"\nyolokd export: {warnings[-1]}\n" + "!" * 80)


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

    from yolokd.evaluation.validate import FullNMSValidator

    height, width = images.image_size(options.imgsz)
    device = "0" if exported.suffix == ".engine" else (options.device or "cpu")
    validator = FullNMSValidator if student.task == "detect" else None  # no NMS time limit: the two mAPs comparable
    with tempfile.TemporaryDirectory() as folder:
        common = dict(data=options.data, split="val", device=device, plots=False, verbose=False, project=folder)
        common["validator"] = validator
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


__all__ = ["map_check", "parity_check", "plain_comparison", "run_checks", "task_channels"]
