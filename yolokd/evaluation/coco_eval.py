"""COCO box metrics (the papers' AP, AP50, AP75, AP_S, AP_M, AP_L) with pycocotools.

``evaluate_coco(gt, predictions)`` runs pycocotools' ``COCOeval(iouType="bbox")`` unchanged: AP averaged over IoU
0.50:0.05:0.95 with 101-point interpolated precision, at most 100 detections per image (by score), area ranges
small < 32² <= medium < 96² <= large (pixels²). Ultralytics' own mAP50-95 differs on purpose: it keeps up to
``max_det=300`` detections per image and integrates a continuous precision envelope, so the two rarely agree in
the third decimal.

Image ids may be ints or strings (Ultralytics uses the file stem when it is not numeric); they are mapped to
consecutive ints before pycocotools sees them, since it sorts ids and a mix of both types would not sort.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

METRIC_NAMES = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")


@dataclass
class CocoMetrics:
    """COCO box metrics in [0, 1]; NaN where the split has no ground truth in that area range.

    Attributes:
        ap: AP averaged over IoU 0.50:0.95 (COCO's headline "AP", maxDets 100).
        ap50: AP at IoU 0.50.
        ap75: AP at IoU 0.75.
        ap_small: AP of boxes with area < 32² pixels².
        ap_medium: AP of boxes with 32² <= area < 96².
        ap_large: AP of boxes with area >= 96².
        images: images in the ground truth.
        annotations: ground-truth boxes.
        detections: predictions evaluated (before pycocotools keeps the top 100 per image).
    """

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    images: int = 0
    annotations: int = 0
    detections: int = 0

    def as_row(self) -> dict[str, float]:
        """The six paper columns by their printed names (AP, AP50, ...)."""
        values = (self.ap, self.ap50, self.ap75, self.ap_small, self.ap_medium, self.ap_large)
        return dict(zip(METRIC_NAMES, values, strict=True))

    def to_json(self) -> dict[str, Any]:
        """Plain dict; NaN becomes None (JSON has no NaN)."""
        return {
            key: None if isinstance(value, float) and math.isnan(value) else value
            for key, value in asdict(self).items()
        }


def _load(source: dict | list | str | Path) -> Any:
    if isinstance(source, (str, Path)):
        with open(source) as file:
            return json.load(file)
    return copy.deepcopy(source)


def _with_int_ids(gt: dict[str, Any], predictions: list[dict[str, Any]]) -> None:
    """Rewrite image ids (int or str) in place as consecutive ints; raise on predictions of unknown images/classes."""
    index = {image["id"]: position + 1 for position, image in enumerate(gt["images"])}
    for image in gt["images"]:
        image["id"] = index[image["id"]]
    for annotation in gt["annotations"]:
        annotation["image_id"] = index[annotation["image_id"]]
    categories = {category["id"] for category in gt["categories"]}
    for position, prediction in enumerate(predictions):
        if prediction["image_id"] not in index:
            raise ValueError(
                f"predictions[{position}]: image_id {prediction['image_id']!r} is not an image of the ground truth "
                f"(e.g. {list(index)[:3]}); predictions and ground truth come from different splits or id schemes"
            )
        if prediction["category_id"] not in categories:
            raise ValueError(
                f"predictions[{position}]: category_id {prediction['category_id']!r} is not a ground-truth category "
                f"({sorted(categories)})"
            )
        prediction["image_id"] = index[prediction["image_id"]]


def evaluate_coco(
    gt: dict[str, Any] | str | Path, predictions: list[dict[str, Any]] | str | Path, verbose: bool = False
) -> CocoMetrics:
    """pycocotools box metrics of `predictions` against `gt`.

    Args:
        gt: COCO ground truth (dict or JSON path), e.g. from :func:`yolokd.evaluation.coco_gt.coco_gt_for_split`.
        predictions: COCO results, ``[{"image_id", "category_id", "bbox": [x, y, w, h] pixels, "score"}, ...]``
            (dict list or JSON path, e.g. Ultralytics' ``predictions.json``). Extra keys are ignored.
        verbose: print pycocotools' 12-line summary.

    Returns:
        The metrics; with no predictions at all, 0.0 for every range that has ground truth (NaN for the others).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, results = _load(gt), _load(predictions)
    _with_int_ids(gt_dict, results)
    counts = dict(images=len(gt_dict["images"]), annotations=len(gt_dict["annotations"]), detections=len(results))
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        if not results:
            return CocoMetrics(*_empty_result(coco_gt), **counts)
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    if verbose:
        print(log.getvalue())
    stats = [float("nan") if value < 0 else float(value) for value in coco_eval.stats[:6]]
    return CocoMetrics(*stats, **counts)


def _empty_result(coco_gt: Any) -> list[float]:
    """0.0 for the all / small / medium / large ranges with ground truth, NaN for the others (bounds as pycocotools)."""
    areas = [annotation["area"] for annotation in coco_gt.dataset["annotations"] if not annotation.get("iscrowd")]
    ranges = [(0, math.inf), (0, 32**2), (32**2, 96**2), (96**2, math.inf)]
    has_gt = [any(low <= area <= high for area in areas) for low, high in ranges]
    score = [0.0 if present else float("nan") for present in has_gt]
    return [score[0], score[0], score[0], *score[1:]]
