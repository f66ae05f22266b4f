"""COCO metrics through the YOLO -> COCO ground-truth conversion, on a hand-made split with hand-computed AP."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolokd.evaluation.coco_eval import evaluate_coco
from yolokd.evaluation.coco_gt import build_coco_gt, coco_gt_for_split, image_id

# image stem -> (width, height, [(cls, x_left, y_top, w, h) in pixels]); one numeric and one text stem, as
# Ultralytics writes image_id = int(stem) or stem. Areas: 12000 (large), 400 (small), 2000 (medium), 10000 (large).
SPLIT = {
    "000001": (320, 240, [(0, 40, 50, 120, 100), (0, 200, 20, 20, 20)]),
    "shapes_b": (160, 160, [(0, 30, 30, 50, 40), (1, 50, 50, 100, 100)]),
}
CLASS_MAP = [1, 2]  # Ultralytics' class_map for a 2-class non-COCO dataset: category_id = cls + 1
RECALL_TWO_OF_THREE = 67 / 101  # 101-point AP at precision 1 up to recall 2/3: thresholds 0.00..0.66


def write_split(root: Path) -> list[str]:
    """Write SPLIT as images/val/*.png + labels/val/*.txt (normalised cx cy w h); return the image paths."""
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    files = []
    for stem, (width, height, boxes) in SPLIT.items():
        image = root / "images" / "val" / f"{stem}.png"
        cv2.imwrite(str(image), np.full((height, width, 3), 127, np.uint8))
        lines = [
            f"{c} {(x + w / 2) / width} {(y + h / 2) / height} {w / width} {h / height}" for c, x, y, w, h in boxes
        ]
        (root / "labels" / "val" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        files.append(str(image))
    return files


def predictions(shift_large: float = 0.0, drop_small: bool = False) -> list[dict]:
    """Ultralytics-style predictions.json entries: every GT box, scores descending in SPLIT order."""
    results, score = [], 0.95
    for stem, (_, _, boxes) in SPLIT.items():
        for index, (cls, x, y, w, h) in enumerate(boxes):
            if drop_small and w * h < 32**2:
                continue
            dx = shift_large if (stem, index) == ("000001", 0) else 0.0
            entry = {"image_id": image_id(f"{stem}.png"), "category_id": cls + 1, "bbox": [x + dx, y, w, h]}
            results.append({**entry, "score": score if dx == 0 else 0.1, "file_name": f"{stem}.png"})
            score -= 0.1
    return results


@pytest.fixture
def split_files(tmp_path: Path) -> list[str]:
    return write_split(tmp_path)


def test_gt_ids_boxes_and_areas(split_files):
    """Image ids follow Ultralytics (int stem or stem), categories cls + 1, boxes in pixels, ids from 1."""
    gt = build_coco_gt(split_files, CLASS_MAP, {0: "a", 1: "b"})
    assert [image["id"] for image in gt["images"]] == [1, "shapes_b"]
    assert [(image["width"], image["height"]) for image in gt["images"]] == [(320, 240), (160, 160)]
    boxes = [(a["image_id"], a["category_id"], a["bbox"], a["area"]) for a in gt["annotations"]]
    expected = [(1, 1, [40, 50, 120, 100], 12000), (1, 1, [200, 20, 20, 20], 400)]
    expected += [("shapes_b", 1, [30, 30, 50, 40], 2000), ("shapes_b", 2, [50, 50, 100, 100], 10000)]
    for (image, category, box, area), (image_e, category_e, box_e, area_e) in zip(boxes, expected, strict=True):
        assert (image, category) == (image_e, category_e)
        assert box == pytest.approx(box_e, abs=1e-3) and area == pytest.approx(area_e, rel=1e-4)
    assert [a["id"] for a in gt["annotations"]] == [1, 2, 3, 4]
    assert gt["categories"] == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def test_perfect_predictions_score_one(split_files):
    """Every GT box predicted exactly: all six metrics are 1.0."""
    metrics = evaluate_coco(build_coco_gt(split_files, CLASS_MAP), predictions())
    assert list(metrics.as_row().values()) == pytest.approx([1.0] * 6)


def test_missing_small_box(split_files):
    """Class 1 finds 2 of its 3 boxes at precision 1 -> AP 67/101; class 2 -> 1; AP_S 0, AP_M = AP_L = 1."""
    metrics = evaluate_coco(build_coco_gt(split_files, CLASS_MAP), predictions(drop_small=True))
    assert metrics.ap == pytest.approx((RECALL_TWO_OF_THREE + 1) / 2, abs=1e-6)
    assert metrics.ap50 == pytest.approx((RECALL_TWO_OF_THREE + 1) / 2, abs=1e-6)
    assert (metrics.ap_small, metrics.ap_medium, metrics.ap_large) == pytest.approx((0.0, 1.0, 1.0))


def test_shifted_large_box(split_files):
    """Large box shifted 24 px: IoU 9600/14400 = 2/3 passes IoU 0.50-0.65 (4 of 10 thresholds) and fails 0.70-0.95.

    Class 1 per threshold: 1.0 when it matches, else 67/101 (2 of 3 found first); class 2 always 1.0.
    Large range, class 1: 1.0 at 4 thresholds, 0.0 at 6 -> 0.4; AP_L = (0.4 + 1) / 2.
    """
    metrics = evaluate_coco(build_coco_gt(split_files, CLASS_MAP), predictions(shift_large=24.0))
    class_1 = (4 * 1.0 + 6 * RECALL_TWO_OF_THREE) / 10
    assert metrics.ap == pytest.approx((class_1 + 1) / 2, abs=1e-6)
    assert metrics.ap50 == pytest.approx(1.0)
    assert metrics.ap75 == pytest.approx((RECALL_TWO_OF_THREE + 1) / 2, abs=1e-6)
    assert metrics.ap_large == pytest.approx((0.4 + 1.0) / 2, abs=1e-6)
    assert (metrics.ap_small, metrics.ap_medium) == pytest.approx((1.0, 1.0))


def test_no_predictions(split_files):
    """No detections: 0.0 for every range with ground truth."""
    metrics = evaluate_coco(build_coco_gt(split_files, CLASS_MAP), [])
    assert list(metrics.as_row().values()) == [0.0] * 6


def test_prediction_of_unknown_image_raises(split_files):
    """A prediction whose image_id is not in the ground truth names the id."""
    with pytest.raises(ValueError, match="'elsewhere'"):
        evaluate_coco(build_coco_gt(split_files, CLASS_MAP), [{**predictions()[0], "image_id": "elsewhere"}])


def test_duplicate_image_ids_raise(tmp_path):
    """Two files whose stems give the same image_id (1.png, 001.png) are refused with both names."""
    root = tmp_path / "images" / "val"
    root.mkdir(parents=True)
    for name in ("1.png", "001.png"):
        cv2.imwrite(str(root / name), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="both get image_id 1"):
        build_coco_gt([str(root / "1.png"), str(root / "001.png")], CLASS_MAP)


def test_cache_reused_then_rebuilt_on_label_change(split_files, tmp_path):
    """The JSON is written once beside the labels and rebuilt when a label file changes."""
    path = coco_gt_for_split(split_files, CLASS_MAP)
    assert path == tmp_path / "labels" / "val.coco.json"
    written = path.stat().st_mtime_ns
    assert coco_gt_for_split(split_files, CLASS_MAP).stat().st_mtime_ns == written
    label = tmp_path / "labels" / "val" / "shapes_b.txt"
    label.write_text(label.read_text().splitlines()[0] + "\n")  # drop class 1's box: size and mtime change
    gt = json.loads(coco_gt_for_split(split_files, CLASS_MAP).read_text())
    assert len(gt["annotations"]) == 3 and path.stat().st_mtime_ns != written
