"""The synthetic set's task labels (``task=segment|pose|obb``): exact from the generator's polygons, same images and
objects as the detect labels, and the detect output and cache key unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolokd.data import make_synthetic_dataset
from yolokd.data.synthetic import KEYPOINT_FLIP, KEYPOINT_SHAPE, clip_polygon, extreme_points

SMALL = {"num_train": 6, "num_val": 2, "imgsz": 64, "seed": 2}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """The same small set written as detect and as segment labels."""
    root = tmp_path_factory.mktemp("tasks")
    tasks = ("detect", "segment", "pose", "obb")
    return {task: make_synthetic_dataset(root / task, task=task, **SMALL).parent for task in tasks}


def _labels(root: Path) -> dict[str, list[list[float]]]:
    return {
        str(p.relative_to(root)): [[float(v) for v in line.split()] for line in p.read_text().splitlines()]
        for p in sorted(root.glob("labels/*/*.txt"))
    }


def test_clip_polygon_known_area():
    """A square from -2 to 2 clipped to [0, 4]^2 keeps its quarter 2x2 (area 4); one inside is unchanged."""
    square = np.array([[-2.0, -2.0], [2.0, -2.0], [2.0, 2.0], [-2.0, 2.0]])
    clipped = clip_polygon(square, 4.0)
    assert cv2.contourArea(clipped.astype(np.float32)) == pytest.approx(4.0)
    assert clipped.min() == 0.0 and clipped.max() == 2.0
    inside = square + 3.0
    assert np.array_equal(clip_polygon(inside, 8.0), inside)
    assert clip_polygon(square - 10.0, 4.0).shape == (0, 2)  # entirely outside


def test_clip_polygon_of_a_concave_shape_keeps_the_exact_area():
    """A cross (concave) half outside the window keeps exactly the area of its inside part."""
    t = 0.3
    arm = np.array([[t, t], [t, 1], [-t, 1], [-t, t]])
    cross = np.concatenate(
        [np.stack([-arm[:, 1], arm[:, 0]], 1) if k % 2 else arm * (1 if k == 0 else -1) for k in range(4)]
    )
    shifted = cross * 4 + [0.0, 4.0]  # centre on the left border x = 0
    clipped = clip_polygon(shifted, 8.0)
    window = np.zeros((800, 800), np.uint8)
    full = np.zeros_like(window)
    cv2.fillPoly(full, [np.round(shifted * 100).astype(np.int32)], 1)
    assert clipped[:, 0].min() >= 0
    assert cv2.contourArea(clipped.astype(np.float32)) == pytest.approx(full.sum() / 1e4, rel=0.02)


def test_segment_labels_are_polygons_with_the_detect_boxes(sets):
    """Segment labels hold one polygon per detect label, same class; its extent is the detect box when the shape is
    inside the image, and within it when the border cuts the shape (the detect box clamps the full shape's box,
    which can reach past the visible part)."""
    detect, segment = _labels(sets["detect"]), _labels(sets["segment"])
    assert detect.keys() == segment.keys() and sum(len(v) for v in detect.values()) > 0
    for name, boxes in detect.items():
        assert len(boxes) == len(segment[name])
        for (cls, x, y, w, h), (seg_cls, *coords) in zip(boxes, segment[name], strict=True):
            points = np.array(coords).reshape(-1, 2)
            assert seg_cls == cls and len(points) >= 3 and points.min() >= 0 and points.max() <= 1
            extent, box = (
                np.array([*points.min(0), *points.max(0)]),
                np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2]),
            )
            assert (extent[:2] >= box[:2] - 2e-6).all() and (extent[2:] <= box[2:] + 2e-6).all()
            if points.min() > 0 and points.max() < 1:
                np.testing.assert_allclose(extent, box, atol=2e-6)


def test_obb_labels_are_the_rotated_rectangles_of_the_polygons(sets):
    """OBB labels: four corners of a rectangle per segment polygon, same class; for a shape inside the image it is
    the polygon's minimum-area rectangle (where the border did not clamp it): it holds every vertex and its area is
    cv2.minAreaRect's."""
    segment, obb = _labels(sets["segment"]), _labels(sets["obb"])
    assert segment.keys() == obb.keys()
    inside_shapes = 0
    for name, polygons in segment.items():
        assert len(polygons) == len(obb[name])
        for (cls, *coords), (obb_cls, *corners) in zip(polygons, obb[name], strict=True):
            assert obb_cls == cls and len(corners) == 8
            polygon, rectangle = np.array(coords).reshape(-1, 2), np.array(corners).reshape(4, 2)
            if rectangle.min() > 0 and rectangle.max() < 1:  # not clamped by the border: exact
                inside_shapes += 1
                sides = np.linalg.norm(np.roll(rectangle, -1, 0) - rectangle, axis=1)
                np.testing.assert_allclose(sides[:2], sides[2:], atol=1e-5)  # a rectangle
                expected = cv2.minAreaRect(polygon.astype(np.float32))
                area = cv2.contourArea(rectangle.astype(np.float32))
                assert area == pytest.approx(expected[1][0] * expected[1][1], rel=1e-3)
                inside = [cv2.pointPolygonTest(rectangle.astype(np.float32), tuple(v), True) for v in polygon]
                assert min(inside) >= -1e-5
            assert rectangle.min() >= 0 and rectangle.max() <= 1
    assert inside_shapes > 0


def test_extreme_points_of_a_polygon():
    """Leftmost, topmost, rightmost, bottommost vertex, the first one on ties."""
    poly = np.array([[0.0, 0.0], [4.0, 1.0], [3.0, 5.0], [-1.0, 5.0]])
    assert extreme_points(poly).tolist() == [[-1.0, 5.0], [0.0, 0.0], [4.0, 1.0], [3.0, 5.0]]


def test_pose_labels_are_the_detect_boxes_plus_the_extreme_vertices(sets):
    """Pose rows are the detect row + 4 keypoints (x y v): the shape's extreme vertices, visible (2) inside the image,
    ``0 0 0`` outside; for a shape inside the image they are the segment polygon's extreme vertices; data.yaml
    carries kpt_shape [4, 3] and the left/right flip."""
    detect, pose, segment = _labels(sets["detect"]), _labels(sets["pose"]), _labels(sets["segment"])
    checked = 0
    for name, boxes in detect.items():
        assert len(boxes) == len(pose[name])
        for box, row, (_, *coords) in zip(boxes, pose[name], segment[name], strict=True):
            assert row[:5] == box and len(row) == 5 + 4 * 3
            keypoints = np.array(row[5:]).reshape(4, 3)
            assert set(keypoints[:, 2]) <= {0.0, 2.0}
            assert (keypoints[keypoints[:, 2] == 0] == 0).all()
            polygon = np.array(coords).reshape(-1, 2)
            if polygon.min() > 0 and polygon.max() < 1:  # not cut: the clipped polygon is the shape itself
                checked += 1
                np.testing.assert_allclose(keypoints[:, :2], extreme_points(polygon), atol=2e-6)
                assert (keypoints[:, 2] == 2).all()
    assert checked > 0
    data = yaml.safe_load((sets["pose"] / "data.yaml").read_text())
    assert data["kpt_shape"] == list(KEYPOINT_SHAPE) and data["flip_idx"] == KEYPOINT_FLIP == [2, 1, 0, 3]


def test_images_are_identical_and_detect_keeps_its_cache_key(sets):
    """The images are the same bytes for every task; the detect meta has no task key (old caches stay valid)."""
    for image in sorted((sets["detect"] / "images").glob("*/*.png")):
        for task in ("segment", "pose", "obb"):
            assert image.read_bytes() == (sets[task] / image.relative_to(sets["detect"])).read_bytes()
    assert "task" not in json.loads((sets["detect"] / "meta.json").read_text())["params"]
    assert json.loads((sets["segment"] / "meta.json").read_text())["params"]["task"] == "segment"


def test_unknown_task_is_refused(tmp_path):
    """A task the generator does not write is a ValueError naming the valid ones."""
    with pytest.raises(ValueError, match=r"task='classify' is not one of \['detect', 'segment'"):
        make_synthetic_dataset(tmp_path, task="classify", **SMALL)


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_ultralytics_reads_the_task_set(sets, task):
    """Ultralytics' YOLODataset of the task loads every label row (polygons / rotated rectangles) without a warning
    dropping one, and an OBB batch holds xywhr boxes."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(sets[task] / "data.yaml"))
    cfg = get_cfg(overrides={"task": task, "imgsz": 64})
    dataset = build_yolo_dataset(cfg, str(sets[task] / "images" / "train"), 2, data, mode="val")
    rows = sum(len(p.read_text().splitlines()) for p in (sets[task] / "labels" / "train").glob("*.txt"))
    assert sum(len(label["cls"]) for label in dataset.labels) == rows > 0
    if task == "pose":
        assert all(label["keypoints"].shape[1:] == KEYPOINT_SHAPE for label in dataset.labels if len(label["cls"]))
    else:
        assert all(len(label["segments"]) == len(label["cls"]) for label in dataset.labels if len(label["cls"]))
    if task == "obb":
        item = next(dataset[i] for i in range(len(dataset)) if len(dataset.labels[i]["cls"]))
        assert item["bboxes"].shape[-1] == 5
