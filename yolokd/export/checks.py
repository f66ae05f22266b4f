"""Export checks: the ONNX graph, numerical parity with the PyTorch student, mAP, and no KD residue.

Parity compares the exported model with the fp32 PyTorch student on the same letterboxed real images. For raw
outputs (B, 4 + C, A): max |diff| of boxes (pixels) and of class scores, cosine similarity of the whole output, and
agreement of the top boxes: the student's top-k detections after Ultralytics' NMS, looked up at the same anchors of
the export (same class, IoU >= 0.9). For detection outputs (NMS-free heads, NMS in the graph): the share of the
student's top-k detections the export also finds. Tolerances are per precision (``TOLERANCES``).
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
    """Largest accepted deviation of an export from the fp32 PyTorch student.

    Attributes:
        score_abs (float): max |diff| of class probabilities.
        box_rel (float): max |diff| of box coordinates as a fraction of the input side (x 640 = pixels at 640).
        cosine (float): minimum cosine similarity of the whole raw output.
        agreement (float): minimum share of the student's top boxes the export finds.
        map_drop (float | None): largest accepted mAP50-95 drop (0.01 = 1 mAP point); None: flagged, not failed.
    """

    score_abs: float
    box_rel: float
    cosine: float
    agreement: float
    map_drop: float | None


TOLERANCES = {
    "fp32": Tolerance(score_abs=1e-3, box_rel=2e-4, cosine=0.99999, agreement=0.95, map_drop=0.002),
    "fp16": Tolerance(score_abs=1e-2, box_rel=3e-3, cosine=0.9995, agreement=0.9, map_drop=0.005),
    "int8": Tolerance(score_abs=0.15, box_rel=5e-2, cosine=0.98, agreement=0.6, map_drop=None),
}
INT8_MAP_FLAG = 0.01
"""INT8 losing more than 1 mAP50-95 point is flagged loudly (reported, not failed: acceptable or not is yours)."""


def check_onnx_graph(path: str | Path, batch: int, imgsz: tuple[int, int], dynamic: bool, nc: int) -> dict[str, Any]:
    """``onnx.checker`` and the Ultralytics contract: input ``images`` (B, 3, h, w), output ``output0``.

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
    if [name for name, _ in outputs] != ["output0"]:
        problems.append(f"outputs: {[name for name, _ in outputs]}, expected ['output0']")
    elif not dynamic and outputs[0][1][0] != batch:
        problems.append(f"output0: batch {outputs[0][1][0]}, expected {batch}")
    raw_channels = outputs[0][1][1] if outputs and len(outputs[0][1]) == 3 else None
    return {"inputs": inputs, "outputs": outputs, "raw": raw_channels == 4 + nc, "problems": problems}


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


def detections(predictions: torch.Tensor, nc: int, end2end: bool, conf: float = 0.001) -> list[torch.Tensor]:
    """Ultralytics' NMS (IoU 0.7, at most 300 per image) -> per image (N, 6) xyxy, score, class, by score."""
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(predictions.float(), conf, 0.7, max_det=300, nc=nc, end2end=end2end)


def top_box_agreement(reference: list[torch.Tensor], exported: list[torch.Tensor], k: int = 20, iou: float = 0.9):
    """Share of the reference's top-k boxes per image with a same-class export box (among its top 2k) at IoU >= iou.

    Args:
        reference (list[Tensor[N, 6]]): per image, xyxy pixels, score, class, sorted by score.
        exported (list[Tensor[M, 6]]): the same for the export.

    Returns:
        (float | None): matched / compared; None when the reference has no detections.
    """
    from ultralytics.utils.metrics import box_iou

    matched = compared = 0
    for ref, out in zip(reference, exported, strict=True):
        ref, out = ref[:k].float(), out[: 2 * k].float()
        compared += len(ref)
        if len(ref) and len(out):
            same_class = ref[:, 5:6] == out[:, 5][None]
            matched += int(((box_iou(ref[:, :4], out[:, :4]) >= iou) & same_class).any(1).sum())
    return matched / compared if compared else None


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
    conf: float = 0.001,
    tie: float = 1e-3,
) -> dict[str, Any]:
    """Deviation of exported predictions from the PyTorch reference on the same images.

    Args:
        reference (Tensor[B, 4 + C, A] | Tensor[B, N, 6]): fp32 PyTorch predictions, raw or detections.
        reference_end2end (bool): ``reference`` holds detections (B, N, 6).
        exported (Tensor[B, 4 + C, A] | Tensor[B, N, 6]): the export's predictions.
        exported_end2end (bool): ``exported`` holds detections (NMS-free head or NMS in the graph).
        nc (int): classes C.
        imgsz (int): largest input side, pixels (for the relative box tolerance).
        conf (float): score threshold of the detections compared (the graph's own for nms=True exports).
        tie (float): class scores closer than this count as tied (the precision's score tolerance).

    Returns:
        (dict): for two raw outputs max/mean |diff|, boxes (pixels and relative), scores, cosine and the
        anchor-aligned top-box agreement; for detections the agreement of IoU-matched NMS outputs. Always how many
        reference boxes were compared.
    """
    reference, exported = reference.float().cpu(), exported.float().cpu()
    result: dict[str, Any] = {"shape": list(exported.shape), "elementwise": not (reference_end2end or exported_end2end)}
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
        agreement, compared = anchor_agreement(reference, exported, nc, conf, tie=tie)
        result.update(top_box_agreement=agreement, reference_boxes=compared, agreement_kind="anchor-aligned")
        return result
    reference_boxes = detections(reference, nc, reference_end2end, conf)
    exported_boxes = detections(exported, nc, exported_end2end, conf)
    result["top_box_agreement"] = top_box_agreement(reference_boxes, exported_boxes)
    result["reference_boxes"] = sum(len(boxes[:20]) for boxes in reference_boxes)
    result["agreement_kind"] = "NMS outputs matched by IoU"
    return result


def parity_problems(result: dict[str, Any], precision: str) -> list[str]:
    """Every parity number outside the tolerance of ``precision``, as readable lines."""
    tolerance = TOLERANCES[precision]
    limits = [
        ("max_abs_diff_scores", tolerance.score_abs, "<="),
        ("box_rel", tolerance.box_rel, "<="),
        ("cosine", tolerance.cosine, ">="),
        ("top_box_agreement", tolerance.agreement, ">="),
    ]
    problems = []
    for key, limit, relation in limits:
        value = result.get(key)
        if value is not None and not (value <= limit if relation == "<=" else value >= limit):
            problems.append(f"parity {key} = {value:.6g}, expected {relation} {limit:g} for {precision}")
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
