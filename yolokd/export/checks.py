"""Export checks: the ONNX graph, numerical parity with the PyTorch student, mAP, and no KD residue.

Parity compares the exported model with the fp32 PyTorch student on the same letterboxed real images, on what a
user sees: the detections after Ultralytics' NMS. Each student detection (score >= conf) is matched to the export's
same-class detection of highest IoU (a match at IoU >= ``MATCH_IOU``; the export's detections are taken down to
conf - the score tolerance, so a 0.26 -> 0.24 score is not a miss). Pass/fail reads the recall of the student's
detections, the mean IoU and the mean |score difference| of the matched pairs (``TOLERANCES``, per precision), and
the mAP delta. For raw outputs (B, 4 + C, A) the max |diff| of boxes and scores over all anchors (background
included), the cosine similarity and the anchor-aligned top-box agreement are reported as information only: INT8
moves background scores that no detection uses. Task models are checked the same way on their detections, whose
task values (mask coefficients, keypoints) follow the boxes through NMS and are compared on the matched pairs; OBB
detections are rotated boxes, kept by rotated NMS and matched by ProbIoU. Segment models have a second output, the
mask prototypes: they are compared elementwise, and the masks a user sees (coefficients x prototypes, cropped to the
box) are compared by mask IoU on the matched pairs. Each parity result lists what it compared under ``compared``.
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
        mask_iou (float): segment models: minimum mean IoU of the binary masks of the matched pairs (prototype
            resolution, cropped to the box).
        proto_rel (float | None): segment models: largest max |prototype difference| / max |PyTorch prototype|;
            None: reported, not failed.
    """

    recall: float
    iou: float
    score_abs: float
    map_drop: float | None
    mask_iou: float = 0.98
    proto_rel: float | None = 1e-3


TOLERANCES = {
    "fp32": Tolerance(recall=0.99, iou=0.99, score_abs=1e-3, map_drop=0.002, mask_iou=0.98, proto_rel=1e-3),
    "fp16": Tolerance(recall=0.95, iou=0.97, score_abs=1e-2, map_drop=0.005, mask_iou=0.9, proto_rel=1e-2),
    "int8": Tolerance(recall=0.8, iou=0.85, score_abs=0.05, map_drop=None, mask_iou=0.7, proto_rel=None),
}
"""Chosen, not yet measured on a GPU: FP16 and INT8 limits are to be checked against real engines. The fp32 mask IoU
leaves room for a pixel flipped at the 0 threshold of a small mask (one of 50 pixels)."""
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


def _best_matches(
    reference: torch.Tensor, exported: torch.Tensor, match_iou: float, rotated: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For one image's detections (``detections`` layout, on the CPU, float): per reference detection whether it has
    a match, the index of the export's same-class detection of highest IoU and that IoU, each (N,)."""
    same_class = reference[:, 5:6] == exported[:, 5][None]  # (N, M)
    overlap = _overlap(reference, exported, rotated).masked_fill(~same_class, -1.0)  # other classes never match
    best_iou, best = overlap.max(1)
    return best_iou >= match_iou, best, best_iou


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
        pairs), task_values_max_abs (max |difference| of the E task values of the matched pairs: mask coefficients,
        keypoint x, y (pixels) and visibility, the angle); the ratios are None when there is nothing to average.
    """
    matched_iou, score_diff, task_diff = [], [], []
    reference_count = exported_count = 0
    for ref, out in zip(reference, exported, strict=True):
        ref, out = ref.float().cpu(), out.float().cpu()
        reference_count, exported_count = reference_count + len(ref), exported_count + len(out)
        if not len(ref) or not len(out):
            continue
        found, best, best_iou = _best_matches(ref, out, match_iou, rotated)
        matched_iou.append(best_iou[found])
        score_diff.append((ref[found, 4] - out[best[found], 4]).abs())
        task_diff.append((ref[found, 6:] - out[best[found], 6:]).abs().flatten())
    ious = torch.cat(matched_iou) if matched_iou else torch.zeros(0)
    diffs = torch.cat(score_diff) if score_diff else torch.zeros(0)
    task_diffs = torch.cat(task_diff) if task_diff else torch.zeros(0)

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
        "task_values_max_abs": summary(task_diffs, torch.max),
    }


def prototype_parity(reference: torch.Tensor, exported: torch.Tensor) -> dict[str, Any]:
    """Elementwise comparison of a segment model's second output, the mask prototypes.

    Args:
        reference (Tensor[B, P, h, w]): the fp32 PyTorch prototypes (P prototypes at 1/4 of the input size).
        exported (Tensor[B, P, h, w]): the export's prototypes.

    Returns:
        (dict): shape, max_abs_diff, mean_abs_diff, relative_max_diff (max |diff| / max |reference|, the pass/fail
        basis), cosine.
    """
    reference, exported = reference.float().cpu(), exported.float().cpu()
    if reference.shape != exported.shape:
        raise ValueError(f"parity: exported prototypes {tuple(exported.shape)} != PyTorch {tuple(reference.shape)}")
    diff = (reference - exported).abs()
    scale = float(reference.abs().max())
    return {
        "shape": list(exported.shape),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "relative_max_diff": float(diff.max()) / scale if scale > 0 else float(diff.max()),
        "cosine": float(torch.nn.functional.cosine_similarity(reference.flatten(), exported.flatten(), dim=0)),
    }


def mask_parity(
    reference: list[torch.Tensor],
    exported: list[torch.Tensor],
    reference_protos: torch.Tensor,
    exported_protos: torch.Tensor,
    imgsz: tuple[int, int],
    match_iou: float = MATCH_IOU,
) -> dict[str, Any]:
    """IoU of the masks a user gets from each matched pair of segment detections (Ultralytics' ``process_mask``:
    coefficients x prototypes, > 0, cropped to the box, at prototype resolution).

    Args:
        reference (list[Tensor[N, 6 + P]]): per image, PyTorch's detections (xyxy pixels, score, class, P mask
            coefficients).
        exported (list[Tensor[M, 6 + P]]): per image, the export's detections, same layout.
        reference_protos (Tensor[B, P, h, w]): PyTorch's prototypes; exported_protos: the export's.
        imgsz (tuple[int, int]): input (height, width), pixels.

    Returns:
        (dict): matched (pairs compared), mean_mask_iou and min_mask_iou (None without pairs); two empty masks count
        as IoU 1.
    """
    from ultralytics.utils.ops import process_mask

    ious = []
    for image, (ref, out) in enumerate(zip(reference, exported, strict=True)):
        ref, out = ref.float().cpu(), out.float().cpu()
        if not len(ref) or not len(out):
            continue
        found, best, _ = _best_matches(ref, out, match_iou, rotated=False)
        if not found.any():
            continue
        pair = out[best[found]]
        ref = ref[found]
        ref_masks = process_mask(reference_protos[image].float().cpu(), ref[:, 6:], ref[:, :4], imgsz).bool()
        out_masks = process_mask(exported_protos[image].float().cpu(), pair[:, 6:], pair[:, :4], imgsz).bool()
        union = (ref_masks | out_masks).flatten(1).sum(1)
        inter = (ref_masks & out_masks).flatten(1).sum(1)
        ious.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union, dtype=torch.float)))
    values = torch.cat(ious) if ious else torch.zeros(0)
    return {
        "matched": len(values),
        "mean_mask_iou": float(values.mean()) if len(values) else None,
        "min_mask_iou": float(values.min()) if len(values) else None,
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
    reference_protos: torch.Tensor | None = None,
    exported_protos: torch.Tensor | None = None,
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
        reference_protos (Tensor[B, P, h, w] | None): segment models: PyTorch's mask prototypes (second output).
        exported_protos (Tensor[B, P, h, w] | None): the export's prototypes (both or neither).

    Returns:
        (dict): ``compared``: what was compared, in words; ``detections``: the reference detections matched to the
        export's (``match_detections``), the pass/fail basis; for two raw outputs also, as information, max/mean
        |diff| of output0 over all anchors, boxes (pixels and relative), scores, cosine and the anchor-aligned top-box
        agreement; segment models also ``prototypes`` (``prototype_parity``) and ``masks`` (``mask_parity``), both
        pass/fail.
    """
    reference, exported = reference.float().cpu(), exported.float().cpu()
    result: dict[str, Any] = {"shape": list(exported.shape), "elementwise": not (reference_end2end or exported_end2end)}
    reference_boxes = detections(reference, nc, reference_end2end, conf, rotated)
    exported_boxes = detections(exported, nc, exported_end2end, max(conf - margin, 0.0), rotated)
    result["detections"] = {"conf": conf, "export_conf": max(conf - margin, 0.0), "match_iou": MATCH_IOU}
    result["detections"].update(match_detections(reference_boxes, exported_boxes, rotated=rotated))
    result["compared"] = [
        "output0 as detections after NMS: the PyTorch detections matched to the export's (same class, "
        f"{'ProbIoU' if rotated else 'IoU'} >= {MATCH_IOU:g}), their scores, and the task values they carry "
        "(mask coefficients, keypoints, angle: information)"
    ]
    if result["elementwise"]:
        result["compared"].append("output0 elementwise over every anchor (information)")
    if (reference_protos is None) != (exported_protos is None):
        raise ValueError("parity: prototypes of both models, or of neither")
    if reference_protos is not None:
        result["prototypes"] = prototype_parity(reference_protos, exported_protos)
        height, width = reference_protos.shape[2] * 4, reference_protos.shape[3] * 4  # prototypes at 1/4 input
        result["masks"] = mask_parity(
            reference_boxes, exported_boxes, reference_protos, exported_protos, (height, width)
        )
        result["compared"] += [
            "output1, the mask prototypes, elementwise (max |diff| / max |PyTorch|)",
            "the masks of the matched detections (coefficients x prototypes, cropped to the box): mask IoU",
        ]
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
    prototypes, masks = result.get("prototypes"), result.get("masks")
    if (
        prototypes is not None
        and tolerance.proto_rel is not None
        and prototypes["relative_max_diff"] > tolerance.proto_rel
    ):
        problems.append(
            f"parity prototypes: max |diff| {prototypes['max_abs_diff']:.6g} = {prototypes['relative_max_diff']:.6g} "
            f"of the largest PyTorch prototype value, expected <= {tolerance.proto_rel:g} for {precision}"
        )
    if masks is not None and masks["mean_mask_iou"] is not None and masks["mean_mask_iou"] < tolerance.mask_iou:
        problems.append(
            f"parity mean_mask_iou = {masks['mean_mask_iou']:.6g} over {masks['matched']} matched detections, expected "
            f">= {tolerance.mask_iou:g} for {precision}"
        )
    return problems


def tolerance_dict(precision: str) -> dict[str, Any]:
    """The tolerance of a precision as a dict (for reports)."""
    return asdict(TOLERANCES[precision])


def map_comparison(pytorch: dict[str, float], exported: dict[str, float], precision: str) -> dict[str, Any]:
    """mAP of PyTorch vs the export (``metrics/mAP50-95(B)`` ..., and the task's own: masks ``(M)``, keypoints
    ``(P)``), the deltas, and whether it fails or is flagged (the largest mAP50-95 drop, boxes or the task's)."""
    keys = ["metrics/mAP50-95(B)", "metrics/mAP50(B)"]
    keys += [
        f"metrics/mAP50{iou}({kind})" for kind in "MP" for iou in ("-95", "") if f"metrics/mAP50-95({kind})" in pytorch
    ]
    delta = {key: exported[key] - pytorch[key] for key in keys}
    drop = max(-delta[key] for key in keys if "mAP50-95" in key)
    tolerance = TOLERANCES[precision].map_drop
    return {
        "pytorch": {key: pytorch[key] for key in keys},
        "exported": {key: exported[key] for key in keys},
        "delta": delta,
        "failed": tolerance is not None and drop > tolerance,
        "flagged": precision == "int8" and drop > INT8_MAP_FLAG,
        "tolerance_drop": tolerance,
    }
