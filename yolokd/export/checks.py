"""Export checks: the ONNX graph, numerical parity with the PyTorch student, mAP, and no KD residue.

Parity compares the exported model with the fp32 PyTorch student on the same letterboxed real images, on what a
user sees: the detections after Ultralytics' NMS. Each student detection (score >= conf) is matched to the export's
same-class detection of highest IoU (a match at IoU >= ``MATCH_IOU``; the export's detections are taken down to
conf - the score tolerance, so a 0.26 -> 0.24 score is not a miss). Pass/fail reads the recall of the student's
detections, the mean IoU and the mean |score difference| of the matched pairs (``TOLERANCES``, per precision), and
the mAP delta. For raw outputs (B, 4 + C, A) the max |diff| of boxes and scores over all anchors (background
included), the cosine similarity and the anchor-aligned top-box agreement are reported as information only: INT8
moves background scores that no detection uses. Task models are checked the same way on their detections, whose
task values (mask coefficients, keypoints) follow the boxes through NMS; OBB detections are rotated boxes, kept by
rotated NMS and matched by ProbIoU.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail limits of an export against the fp32 PyTorch student, on detections matched after NMS.

    Attributes:
        recall (float): minimum share of the student's detections the export finds (same class, IoU >= MATCH_IOU).
        iou (float): minimum mean IoU of the matched pairs.
        score_abs (float): largest mean |score difference| of the matched pairs; also how far below conf the
            export's detections still count.
        map_drop (float | None): largest accepted mAP50-95 drop (0.01 = 1 mAP point); None: flagged, not failed.
    """

    recall: float
    iou: float
    score_abs: float
    map_drop: float | None


TOLERANCES = {
    "fp32": Tolerance(recall=0.99, iou=0.99, score_abs=1e-3, map_drop=0.002),
    "fp16": Tolerance(recall=0.95, iou=0.97, score_abs=1e-2, map_drop=0.005),
    "int8": Tolerance(recall=0.8, iou=0.85, score_abs=0.05, map_drop=None),
}
"""Chosen, not yet measured on a GPU: FP16 and INT8 limits are to be checked against real engines."""
MATCH_IOU = 0.5
"""IoU at which an export detection counts as the student's (COCO's loosest threshold)."""
PARITY_CONF = 0.25
"""Score from which the student's detections are compared: Ultralytics' predict default, the boxes a user sees."""
INT8_MAP_FLAG = 0.01
"""INT8 losing more than 1 mAP50-95 point is flagged loudly (reported, not failed: acceptable or not is yours)."""


def check_onnx_graph(
    path: str | Path, batch: int, imgsz: tuple[int, int], dynamic: bool, nc: int, task: str = "detect", extra: int = 0
) -> dict[str, Any]:
    """``onnx.checker`` and the Ultralytics contract: input ``images`` (B, 3, h, w), output ``output0`` (segment
    models: also ``output1``, the mask prototypes).

    Args:
        task: Ultralytics' task of the model.
        extra: task channels after the class scores of a raw output (mask coefficients, keypoint values, the angle).

    Returns:
        (dict): inputs/outputs as [name, shape] (symbolic sides as strings), ``problems`` (empty when it passes).
    """
    import onnx

    problems = []
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as error:
        message = str(error).splitlines()[0]
        if "topologically sorted" in message:  # seen after Ultralytics' CPU FP16 conversion (Cast nodes appended)
            message += (
                " (FP16 ONNX made on a CPU: export half=true with device=0, or keep FP32 and let the runtime pick)"
            )
        problems.append(f"onnx.checker: {message}")
    graph = onnx.load(str(path), load_external_data=False).graph

    def shape(value: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    inputs = [[value.name, shape(value)] for value in graph.input]
    outputs = [[value.name, shape(value)] for value in graph.output]
    expected_input = ["batch", 3, "height", "width"] if dynamic else [batch, 3, *imgsz]
    if [name for name, _ in inputs] != ["images"] or inputs[0][1] != expected_input:
        problems.append(f"inputs: {inputs}, expected [['images', {expected_input}]]")
    expected_outputs = ["output0", "output1"] if task == "segment" else ["output0"]
    if [name for name, _ in outputs] != expected_outputs:
        problems.append(f"outputs: {[name for name, _ in outputs]}, expected {expected_outputs}")
    elif not dynamic and outputs[0][1][0] != batch:
        problems.append(f"output0: batch {outputs[0][1][0]}, expected {batch}")
    raw_channels = outputs[0][1][1] if outputs and len(outputs[0][1]) == 3 else None
    return {"inputs": inputs, "outputs": outputs, "raw": raw_channels == 4 + nc + extra, "problems": problems}


def graph_signature(path: str | Path) -> dict[str, Any]:
    """What makes two exports equally fast: node count, operator histogram, weight elements read by the nodes
    (counted per use), input/output shapes."""
    import onnx

    graph = onnx.load(str(path)).graph
    sizes = {tensor.name: int(np.prod(tensor.dims)) for tensor in graph.initializer}
    # per use: onnxslim merges equal constants (common in untrained weights), so unique initializers would differ
    parameters = sum(sizes.get(name, 0) for node in graph.node for name in node.input)
    return {
        "nodes": len(graph.node),
        "ops": dict(sorted(Counter(node.op_type for node in graph.node).items())),
        "parameters": parameters,
        "inputs": [[v.name, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]] for v in graph.input],
        "outputs": [[v.name, [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]] for v in graph.output],
    }


def detections(
    predictions: torch.Tensor, nc: int, end2end: bool, conf: float = 0.001, rotated: bool = False
) -> list[torch.Tensor]:
    """Ultralytics' NMS (IoU 0.7, at most 300 per image) -> per image (N, 6 + E) xyxy, score, class, the task's E
    extra values (mask coefficients, keypoints), by score; rotated (OBB): (N, 7) xywh, score, class, angle (radians),
    NMS by ProbIoU."""
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(predictions.float(), conf, 0.7, max_det=300, nc=nc, end2end=end2end, rotated=rotated)


def _overlap(reference: torch.Tensor, exported: torch.Tensor, rotated: bool) -> torch.Tensor:
    """(N, M) IoU of two detection sets (``detections`` layout): box IoU, or ProbIoU of the xywhr boxes."""
    from torchvision.ops import box_iou
    from ultralytics.utils.metrics import batch_probiou

    if not rotated:
        return box_iou(reference[:, :4], exported[:, :4])
    return batch_probiou(
        torch.cat((reference[:, :4], reference[:, 6:7]), 1), torch.cat((exported[:, :4], exported[:, 6:7]), 1)
    )


def match_detections(
    reference: list[torch.Tensor], exported: list[torch.Tensor], match_iou: float = MATCH_IOU, rotated: bool = False
) -> dict[str, Any]:
    """Match each reference detection to the export's same-class detection of highest IoU, image by image.

    Args:
        reference (list[Tensor[N, 6 + E]]): per image, the fp32 PyTorch detections: xyxy pixels, score, class, the
            task's extra values; rotated: xywh pixels, score, class, angle.
        exported (list[Tensor[M, 6 + E]]): per image, the export's detections, same layout.
        match_iou (float): IoU from which a same-class export detection is the reference detection's match.
        rotated (bool): OBB detections, compared by ProbIoU.

    Returns:
        (dict): reference_boxes (N summed), exported_boxes, matched, recall (matched / reference_boxes), mean_iou
        and min_iou of the matched pairs, score_mean_abs and score_max_abs (|score difference| of the matched
        pairs); the ratios are None when there is nothing to average.
    """
    matched_iou, score_diff = [], []
    reference_count = exported_count = 0
    for ref, out in zip(reference, exported, strict=True):
        ref, out = ref.float().cpu(), out.float().cpu()
        reference_count, exported_count = reference_count + len(ref), exported_count + len(out)
        if not len(ref) or not len(out):
            continue
        same_class = ref[:, 5:6] == out[:, 5][None]  # (N, M)
        overlap = _overlap(ref, out, rotated).masked_fill(~same_class, -1.0)  # other classes never match
        best_iou, best = overlap.max(1)
        found = best_iou >= match_iou
        matched_iou.append(best_iou[found])
        score_diff.append((ref[found, 4] - out[best[found], 4]).abs())
    ious = torch.cat(matched_iou) if matched_iou else torch.zeros(0)
    diffs = torch.cat(score_diff) if score_diff else torch.zeros(0)

    def summary(values: torch.Tensor, reduce) -> float | None:
        return float(reduce(values)) if len(values) else None

    return {
        "reference_boxes": reference_count,
        "exported_boxes": exported_count,
        "matched": len(ious),
        "recall": len(ious) / reference_count if reference_count else None,
        "mean_iou": summary(ious, torch.mean),
        "min_iou": summary(ious, torch.min),
        "score_mean_abs": summary(diffs, torch.mean),
        "score_max_abs": summary(diffs, torch.max),
    }


def anchor_agreement(
    reference: torch.Tensor,
    exported: torch.Tensor,
    nc: int,
    conf: float,
    k: int = 20,
    iou: float = 0.9,
    tie: float = 1e-3,
) -> tuple[float | None, int]:
    """Share of the reference's top-k NMS boxes per image whose anchor, in the export, has the same box and class.

    Anchor-aligned, so near-tied scores (a barely trained model) cannot swap which boxes NMS keeps on either side.

    Args:
        reference (Tensor[B, 4 + C, A]): raw fp32 PyTorch predictions, xywh pixels + class probabilities.
        exported (Tensor[B, 4 + C, A]): the export's raw predictions.
        tie (float): the reference class counts as the export's class when its score is within ``tie`` of the max.

    Returns:
        (float | None, int): matched / compared (None without reference boxes) and the number compared.
    """
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywh2xyxy

    detections_per_image, anchors_per_image = non_max_suppression_with_anchors(reference, nc, conf)
    matched = compared = 0
    for image, (boxes, anchors) in enumerate(zip(detections_per_image, anchors_per_image, strict=True)):
        boxes, anchors = boxes[:k], anchors[:k].long()
        if not len(anchors):
            continue
        predicted = exported[image][:, anchors].T  # (k, 4 + C)
        overlap = box_iou(boxes[:, :4], xywh2xyxy(predicted[:, :4])).diagonal()
        scores = predicted[:, 4 : 4 + nc]
        class_score = scores.gather(1, boxes[:, 5:6].long()).squeeze(1)
        same_class = class_score >= scores.max(1).values - tie
        matched += int(((overlap >= iou) & same_class).sum())
        compared += len(anchors)
    return (matched / compared if compared else None), compared


def non_max_suppression_with_anchors(predictions: torch.Tensor, nc: int, conf: float):
    """Ultralytics' NMS (IoU 0.7, 300 per image) returning the kept detections and their anchor indices."""
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(predictions.float(), conf, 0.7, max_det=300, nc=nc, return_idxs=True)


def parity(
    reference: torch.Tensor,
    reference_end2end: bool,
    exported: torch.Tensor,
    exported_end2end: bool,
    nc: int,
    imgsz: int,
    conf: float = 0.25,
    margin: float = 0.0,
    tie: float = 1e-3,
    rotated: bool = False,
) -> dict[str, Any]:
    """Deviation of exported predictions from the PyTorch reference on the same images.

    Args:
        reference (Tensor[B, 4 + C, A] | Tensor[B, N, 6]): fp32 PyTorch predictions, raw or detections.
        reference_end2end (bool): ``reference`` holds detections (B, N, 6).
        exported (Tensor[B, 4 + C, A] | Tensor[B, N, 6]): the export's predictions.
        exported_end2end (bool): ``exported`` holds detections (NMS-free head or NMS in the graph).
        nc (int): classes C.
        imgsz (int): largest input side, pixels (for the relative box difference).
        conf (float): score threshold of the reference detections compared (the graph's own for nms=True exports).
        margin (float): the export's detections are kept down to ``conf - margin`` (the precision's score tolerance).
        tie (float): class scores closer than this count as tied (anchor-aligned agreement, information only).
        rotated (bool): OBB predictions (xywh + angle): NMS and matching by ProbIoU; no anchor-aligned agreement.

    Returns:
        (dict): ``detections``: the reference detections matched to the export's (``match_detections``), the
        pass/fail basis; for two raw outputs also, as information, max/mean |diff| over all anchors, boxes (pixels
        and relative), scores, cosine and the anchor-aligned top-box agreement.
    """
    reference, exported = reference.float().cpu(), exported.float().cpu()
    result: dict[str, Any] = {"shape": list(exported.shape), "elementwise": not (reference_end2end or exported_end2end)}
    reference_boxes = detections(reference, nc, reference_end2end, conf, rotated)
    exported_boxes = detections(exported, nc, exported_end2end, max(conf - margin, 0.0), rotated)
    result["detections"] = {"conf": conf, "export_conf": max(conf - margin, 0.0), "match_iou": MATCH_IOU}
    result["detections"].update(match_detections(reference_boxes, exported_boxes, rotated=rotated))
    if result["elementwise"]:
        if reference.shape != exported.shape:
            raise ValueError(f"parity: exported output {tuple(exported.shape)} != PyTorch {tuple(reference.shape)}")
        diff = (reference - exported).abs()
        result["max_abs_diff"] = float(diff.max())
        result["mean_abs_diff"] = float(diff.mean())
        result["max_abs_diff_boxes_px"] = float(diff[:, :4].max())
        result["max_abs_diff_scores"] = float(diff[:, 4 : 4 + nc].max())
        result["box_rel"] = result["max_abs_diff_boxes_px"] / imgsz
        result["cosine"] = float(torch.nn.functional.cosine_similarity(reference.flatten(), exported.flatten(), dim=0))
        if not rotated:  # axis-aligned box IoU at the anchor; rotated boxes are matched after NMS only
            agreement, compared = anchor_agreement(reference, exported, nc, conf, tie=tie)
            result.update(top_box_agreement=agreement, agreement_boxes=compared)
    return result


def parity_problems(result: dict[str, Any], precision: str) -> list[str]:
    """Every matched-detection number outside the tolerance of ``precision``, as readable lines (the raw-output
    differences are information, never a failure)."""
    tolerance = TOLERANCES[precision]
    limits = [
        ("recall", tolerance.recall, ">="),
        ("mean_iou", tolerance.iou, ">="),
        ("score_mean_abs", tolerance.score_abs, "<="),
    ]
    found = result["detections"]
    problems = []
    for key, limit, relation in limits:
        value = found.get(key)
        if value is not None and not (value <= limit if relation == "<=" else value >= limit):
            problems.append(
                f"parity {key} = {value:.6g} over {found['reference_boxes']} PyTorch detections, expected "
                f"{relation} {limit:g} for {precision}"
            )
    return problems


def tolerance_dict(precision: str) -> dict[str, Any]:
    """The tolerance of a precision as a dict (for reports)."""
    return asdict(TOLERANCES[precision])


def map_comparison(pytorch: dict[str, float], exported: dict[str, float], precision: str) -> dict[str, Any]:
    """mAP of PyTorch vs the export (``metrics/mAP50-95(B)`` ...), the delta, and whether it fails or is flagged."""
    keys = ("metrics/mAP50-95(B)", "metrics/mAP50(B)")
    delta = {key: exported[key] - pytorch[key] for key in keys}
    drop = -delta["metrics/mAP50-95(B)"]
    tolerance = TOLERANCES[precision].map_drop
    return {
        "pytorch": {key: pytorch[key] for key in keys},
        "exported": {key: exported[key] for key in keys},
        "delta": delta,
        "failed": tolerance is not None and drop > tolerance,
        "flagged": precision == "int8" and drop > INT8_MAP_FLAG,
        "tolerance_drop": tolerance,
    }
