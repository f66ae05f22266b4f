"""``yolokd val``: Ultralytics validation plus COCO metrics (pycocotools) on any YOLO-format dataset.

Segment, pose and OBB models validate with their own Ultralytics validator (box and mask/pose metrics); the COCO box
metrics are for detect models (``coco`` defaults to on for those only).

One pass over the split: Ultralytics' ``DetectionValidator`` runs as usual (its mAP50-95, mAP50, P, R, speed, plots)
with ``save_json=True``, so it writes ``predictions.json``; the JSON step is then pycocotools against the split's
ground truth converted from the YOLO labels (cached, see :mod:`yolokd.evaluation.coco_gt`) instead of Ultralytics'
own (which needs ``faster-coco-eval``, or COCO's annotation files). Results go to ``<save_dir>/val_metrics.json``.
On COCO itself the converted labels lack crowd boxes and mask areas, so use the official annotation file for
numbers that must match published ones exactly.

NMS without a time limit: Ultralytics' ``non_max_suppression`` stops after ``2 + 0.05 x batch`` seconds and leaves
the remaining images of the batch with no detections (a warning, nothing else). A dense head with several anchors per
cell (RetinaNet: 9) on a CPU crosses that limit (measured: 127 ms per image, 4 s per batch of 32, every batch cut), so
its mAP would depend on the machine's speed. The validator here runs NMS to the end for every image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils import nms

from yolokd.evaluation.coco_eval import METRIC_NAMES, CocoMetrics, evaluate_coco
from yolokd.evaluation.coco_gt import coco_gt_for_split

METRICS_FILE = "val_metrics.json"


class FullNMSValidator(DetectionValidator):
    """Ultralytics' DetectionValidator whose NMS has no time limit (module docstring): used while training, too."""

    def postprocess(self, preds: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Ultralytics' NMS call (``DetectionValidator.postprocess``) with no time limit: every image is processed."""
        outputs = nms.non_max_suppression(
            preds,
            self.args.conf,
            self.args.iou,
            nc=0 if self.args.task == "detect" else self.nc,
            multi_label=True,
            agnostic=self.args.single_cls or self.args.agnostic_nms,
            max_det=self.args.max_det,
            end2end=self.end2end,
            rotated=self.args.task == "obb",
            max_time_img=float("inf"),
        )
        return [{"bboxes": x[:, :4], "conf": x[:, 4], "cls": x[:, 5], "extra": x[:, 6:]} for x in outputs]


class CocoDetectionValidator(FullNMSValidator):
    """Ultralytics' DetectionValidator whose JSON evaluation is pycocotools on the split's cached COCO ground truth.

    Attributes:
        coco_metrics: the COCO metrics of the last (non-training) validation, None before it ran.
        coco_gt_path: the ground-truth JSON it used.
    """

    coco_metrics: CocoMetrics | None = None
    coco_gt_path: Path | None = None

    def eval_json(self, stats: dict[str, Any]) -> dict[str, Any]:
        """After Ultralytics wrote ``predictions.json``: pycocotools metrics of that very file."""
        if self.training:
            return super().eval_json(stats)
        self.evaluate_coco(self.save_dir / "predictions.json")
        return stats

    def evaluate_coco(self, predictions: Path | list[dict[str, Any]]) -> CocoMetrics:
        """Build (or reuse) the ground truth of the validated images and score `predictions` against it."""
        self.coco_gt_path = coco_gt_for_split(self.dataloader.dataset.im_files, self.class_map, dict(self.names))
        self.coco_metrics = evaluate_coco(self.coco_gt_path, predictions)
        return self.coco_metrics


@dataclass
class ValidationResult:
    """What ``yolokd val`` measured.

    Attributes:
        ultralytics: Ultralytics' ``metrics.results_dict`` (precision, recall, mAP50, mAP50-95, fitness).
        coco: the COCO metrics, None when run with ``coco=False``.
        files: ``metrics`` (val_metrics.json), ``predictions``, ``coco_gt`` and ``save_dir``.
    """

    ultralytics: dict[str, float]
    coco: CocoMetrics | None
    files: dict[str, Path]

    def __str__(self) -> str:
        lines = [f"{key:<24}{value:.4f}" for key, value in self.ultralytics.items()]
        if self.coco is not None:
            lines += ["", "COCO (pycocotools, maxDets 100):"]
            lines += [f"{name:<24}{value:.4f}" for name, value in self.coco.as_row().items()]
        return "\n".join(lines)


def validate_model(model: str | Path, coco: bool | None = None, **val_args: Any) -> ValidationResult:
    """Validate `model` (.pt, or an export Ultralytics validates) with Ultralytics, plus COCO metrics.

    Args:
        model: a checkpoint or export path (or an Ultralytics release name).
        coco: also compute the COCO box metrics (forces ``save_json=True``); None: for detect models only.
        **val_args: any Ultralytics val argument (data, split, imgsz, batch, conf, iou, device, plots, project...).
    """
    from ultralytics import YOLO

    yolo = YOLO(str(model))
    if coco is None:
        coco = yolo.task == "detect"
    elif coco and yolo.task != "detect":
        raise ValueError(
            f"coco: the COCO box metrics cover detect models; {Path(str(model)).name} is a {yolo.task} model: "
            "validate it with coco=false (Ultralytics' box and task metrics)"
        )
    if coco and (val_args.get("single_cls") or val_args.get("classes") is not None):
        raise ValueError("single_cls/classes change the class list of the predictions; use them with coco=false")
    validators: list[DetectionValidator] = []  # the task's validator (segment, pose, OBB: subclasses of it)
    yolo.add_callback("on_val_end", validators.append)
    if coco:
        val_args = {**val_args, "save_json": True}
    metrics = yolo.val(validator=CocoDetectionValidator if coco else None, **val_args)
    validator = validators[-1]
    files = {"save_dir": Path(validator.save_dir)}
    coco_metrics = None
    if coco:
        predictions = Path(validator.save_dir) / "predictions.json"
        coco_metrics = validator.coco_metrics or validator.evaluate_coco([])  # no file: nothing was detected
        files.update(predictions=predictions if predictions.is_file() else None, coco_gt=validator.coco_gt_path)
    result = ValidationResult({k: float(v) for k, v in metrics.results_dict.items()}, coco_metrics, files)
    files["metrics"] = write_metrics(result, model, validator)
    return result


def write_metrics(result: ValidationResult, model: str | Path, validator: DetectionValidator) -> Path:
    """``<save_dir>/val_metrics.json``: both metric sets, the model, data and split, and the files used."""
    path = Path(validator.save_dir) / METRICS_FILE
    payload = {
        "model": str(model),
        "data": str(validator.args.data),
        "split": validator.args.split,
        "imgsz": validator.args.imgsz,
        "ultralytics": result.ultralytics,
        "coco": None if result.coco is None else result.coco.to_json(),
        "coco_columns": list(METRIC_NAMES),
        "files": {name: str(file) for name, file in result.files.items() if file is not None},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
