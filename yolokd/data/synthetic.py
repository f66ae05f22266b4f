"""Deterministic synthetic YOLO detection dataset for the CPU demo and the test suite.

The scenes are built to be hard enough that YOLOv8s clearly beats YOLOv8n at the same short schedule, otherwise the
distillation demo has no gap to close:

* shape, not colour: every object gets a random colour, so only geometry separates the classes, and several classes
  are near neighbours (circle/ellipse, square/rectangle, pentagon/circle at small scale, star/cross).
* scale: object size spans ~8% to ~45% of the image side (log-uniform), so small objects are only a few pixels wide.
* density: 1-6 objects per image, and some images have none (pure background negatives).
* clutter: gradient / smooth-noise / stripe backgrounds plus unlabelled distractors (lines, arcs, scribbles and
  irregular blobs), a few of them drawn over the objects, then global sensor noise, blur and exposure jitter.
* occlusion and truncation: objects overlap and may leave the image; later objects are painted over earlier ones and
  an object whose visible fraction falls below ``MIN_VISIBLE`` is dropped from the labels (it stays in the pixels).
* mild rotation (+-20 deg, plus 0/90 deg for elongated shapes), some textured fills and outlines, and ~15% of the
  objects are low-contrast against their local background.
* anti-aliasing: every shape is rasterised at 4x and area-downsampled, so edges are smooth and coverage exact.

Labels are the tight box of the full (unoccluded) shape, clipped to the image (``task="detect"``, the default), or,
exact from the same polygons, for the other Ultralytics tasks: ``segment``, the shape's polygon clipped to the image
(Sutherland-Hodgman, so the visible area is exact; Ultralytics derives the box from it: the detect label's box
for a shape inside the image, a tighter one where the border cuts a shape whose clamped full box reaches past the
visible part); ``obb``, the minimum-area rotated rectangle of that clipped polygon (``cv2.minAreaRect``) as four
corners, exact for a shape inside the image (the rectangle of the shape itself); where the border cuts a shape its
corners are clamped to the image, as Ultralytics requires; ``pose``, the detect box plus 4 keypoints per object
(:data:`KEYPOINT_SHAPE`): the full shape's extreme vertices, leftmost, topmost, rightmost, bottommost (the first
vertex on ties), visibility 2 inside the image and ``0 0 0`` outside it (4 keypoints because every class has them;
the polygon's own vertex counts differ, 3 to 48). The
same objects are labelled for every task, and the pixels are identical. Everything is derived from
``numpy.random.default_rng`` with one child seed per image, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

__all__ = [
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "KEYPOINT_FLIP",
    "KEYPOINT_SHAPE",
    "STYLES",
    "TASKS",
    "SceneStyle",
    "make_synthetic_dataset",
]

CLASS_NAMES: tuple[str, ...] = ("circle", "ellipse", "triangle", "square", "rectangle", "pentagon", "star", "cross")
GENERATOR_VERSION = "yolokd-synthetic-1"  # bump whenever the pixels or labels change, so caches regenerate
MIN_VISIBLE = 0.35  # objects less visible than this are unlabelled: a detector should not be asked to find them
SUPERSAMPLE = 4
_MARKER = ".yolokd_synthetic"  # proves a folder is ours before we delete anything in it
TASKS = ("detect", "segment", "pose", "obb")  # label formats the generator writes (Ultralytics task names)
# Pose labels: the shape's 4 extreme vertices (leftmost, topmost, rightmost, bottommost), (x, y, visibility) each;
# every class has them, and a horizontal flip swaps leftmost and rightmost.
KEYPOINT_SHAPE = (4, 3)
KEYPOINT_FLIP = [2, 1, 0, 3]


@dataclass(frozen=True)
class SceneStyle:
    """How hard the scenes are: object scale, count, clutter and contrast.

    Attributes:
        size_range: object size as a fraction of the image side (log-uniform).
        max_objects: objects per image are 1..max_objects (or none, see ``p_empty``).
        p_empty: share of images drawn with no objects at all.
        distractors: (low, high) unlabelled clutter items drawn under the objects (numpy ``integers`` bounds).
        p_low_contrast: share of objects coloured close to their local background.
        classes: the shapes drawn, in class-id order (a subset of :data:`CLASS_NAMES`).
    """

    size_range: tuple[float, float] = (0.08, 0.45)
    max_objects: int = 6
    p_empty: float = 0.08
    distractors: tuple[int, int] = (2, 9)
    p_low_contrast: float = 0.15
    classes: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        unknown = sorted(set(self.classes) - set(CLASS_NAMES))
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes={self.classes}: need distinct names from {CLASS_NAMES}")


# "hard": the test scenes (tiny objects at 128 px, heavy clutter). "evidence": larger objects, less clutter, the
# demo's scenes (its shipped teacher was trained on them). "distinct": the evidence benchmark's scenes, four shapes
# no other class resembles, so that in the CPU schedule (480 images, 160 px, 12 epochs) a YOLOv8n student trained
# from scratch learns a real detector (mAP50-95 ~0.2; on the eight-class scenes it reaches only ~0.06-0.08, still
# at the steep start of its learning curve, where no KD signal can be judged) and a YOLOv8s teacher keeps a lead.
STYLES: dict[str, SceneStyle] = {
    "hard": SceneStyle(),
    "evidence": SceneStyle(
        size_range=(0.12, 0.5), max_objects=8, p_empty=0.04, distractors=(1, 5), p_low_contrast=0.08
    ),
    "distinct": SceneStyle(
        size_range=(0.15, 0.55),
        max_objects=6,
        p_empty=0.03,
        distractors=(0, 3),
        p_low_contrast=0.05,
        classes=("circle", "triangle", "star", "cross"),
    ),
}


def _unit_shape(name: str, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Polygon of one class inside [-1, 1]^2 and whether it is elongated (so it may also be turned by 90 deg)."""
    ring = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)

    def regular(k: int, radii: np.ndarray | float = 1.0) -> np.ndarray:
        a = -np.pi / 2 + np.arange(k) * 2.0 * np.pi / k
        return np.stack([np.cos(a), np.sin(a)], 1) * np.reshape(radii, (-1, 1))

    if name == "circle":
        return np.stack([np.cos(ring), np.sin(ring)], 1), False
    if name == "ellipse":
        return np.stack([np.cos(ring), rng.uniform(0.5, 0.78) * np.sin(ring)], 1), True
    if name == "triangle":
        return regular(3, rng.uniform(0.85, 1.0, 3)) + rng.uniform(-0.08, 0.08, (3, 2)), False
    if name == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.9, False
    if name == "rectangle":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * [1.0, rng.uniform(0.4, 0.72)], True
    if name == "pentagon":
        return regular(5), False
    if name == "star":
        return regular(10, np.tile([1.0, rng.uniform(0.38, 0.55)], 5)), False
    if name == "cross":
        t = rng.uniform(0.28, 0.45)
        q = np.array([[t, t], [t, 1], [-t, 1], [-t, t]])  # one arm, then rotated by 90 deg three times
        return np.concatenate([_rot90(q, k) for k in range(4)]), False
    raise ValueError(f"unknown shape {name!r}")


def _rot90(pts: np.ndarray, k: int) -> np.ndarray:
    """Rotate points k quarter turns about the origin."""
    for _ in range(k):
        pts = np.stack([-pts[:, 1], pts[:, 0]], 1)
    return pts


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(h, w, channels), -1.0, 1.0)


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Cluttered float32 BGR background: gradient, colour noise or stripes, always with mid-frequency grain."""
    c1, c2 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    phi = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(phi) * xx + np.sin(phi) * yy)[..., None]
    kind = rng.integers(3)
    if kind == 0:
        t = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    elif kind == 1:
        t = 0.5 + 0.5 * _smooth_noise(rng, n, n, int(rng.integers(3, 9)))
    else:
        t = 0.5 + rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * rng.uniform(2, 9) * ramp + rng.uniform(0, 6.3))
    img = c1 + (c2 - c1) * t
    img += rng.uniform(5, 25) * _smooth_noise(rng, n, n, max(4, n // 6), 3)
    return img


def _coverage(poly: np.ndarray, n: int) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Exact anti-aliased coverage of a polygon (continuous pixel-edge coords) over its clipped box, or None."""
    x0, y0 = np.floor(poly.min(0)).astype(int).clip(0, n)
    x1, y1 = np.ceil(poly.max(0)).astype(int).clip(0, n)
    if x1 <= x0 or y1 <= y0:
        return None
    s = SUPERSAMPLE
    big = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)
    pts = np.round(((poly - [x0, y0]) * s - 0.5) * 16).astype(np.int32)  # cv2 addresses pixel centres
    cv2.fillPoly(big, [pts], 255, cv2.LINE_8, 4)
    alpha = cv2.resize(big, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return (y0, y1, x0, x1), alpha


def _blend(img: np.ndarray, poly: np.ndarray, fill: np.ndarray, opacity: float = 1.0) -> tuple | None:
    """Paint ``fill`` (BGR colour or full-size BGR image) through the polygon's coverage; return (box, alpha)."""
    cov = _coverage(poly, img.shape[0])
    if cov is None:
        return None
    (y0, y1, x0, x1), alpha = cov
    a = (alpha * opacity)[..., None]
    src = fill[y0:y1, x0:x1] if fill.ndim == 3 else fill
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + src * a
    return cov


def _distractors(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Unlabelled clutter: lines, arcs, scribbles and irregular blobs that share colours and edges with objects."""
    n = img.shape[0]
    for _ in range(count):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        kind = rng.integers(4)
        if kind == 3:  # irregular blob: a lumpy polygon, close to but never one of the classes
            k = int(rng.integers(7, 12))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            r = rng.uniform(0.04, 0.16) * n * rng.uniform(0.45, 1.4, k)
            poly = rng.uniform(0, n, 2) + np.stack([np.cos(ang) * r, np.sin(ang) * r], 1)
            _blend(img, poly, colour, rng.uniform(0.4, 1.0))
            continue
        layer = img.copy()
        pts = np.round(rng.uniform(-0.1, 1.1, (int(rng.integers(2, 6)), 2)) * n * 16).astype(np.int32)
        thick = int(rng.integers(1, 3))
        if kind == 0:
            cv2.line(layer, pts[0], pts[1], colour.tolist(), thick, cv2.LINE_AA, 4)
        elif kind == 1:
            axes = tuple(int(v) for v in rng.uniform(0.05, 0.4, 2) * n * 16)
            start = rng.uniform(0, 360)
            span = (start, start + rng.uniform(40, 220))
            cv2.ellipse(layer, pts[0], axes, rng.uniform(0, 180), *span, colour.tolist(), thick, cv2.LINE_AA, 4)
        else:
            cv2.polylines(layer, [pts], False, colour.tolist(), thick, cv2.LINE_AA, 4)
        w = rng.uniform(0.5, 1.0)
        img[:] = img * (1 - w) + layer * w


def _object_colour(rng: np.random.Generator, bg: np.ndarray, p_low_contrast: float) -> np.ndarray:
    """Random colour; a share is low-contrast (close to the local background), the rest clearly separated from it."""
    if rng.random() < p_low_contrast:
        d = rng.normal(size=3)
        return np.clip(bg + d / (np.linalg.norm(d) + 1e-6) * rng.uniform(18, 35), 0, 255).astype(np.float32)
    for _ in range(8):
        c = rng.uniform(0, 255, 3)
        if np.linalg.norm(c - bg) > 80:
            break
    return c.astype(np.float32)


def _place(rng: np.random.Generator, n: int, style: SceneStyle) -> tuple[int, np.ndarray]:
    """Sample a class and its polygon (continuous pixel coords) with scale, rotation and position."""
    cls = int(rng.integers(len(style.classes)))
    unit, elongated = _unit_shape(style.classes[cls], rng)
    half = 0.5 * n * np.exp(rng.uniform(*np.log(style.size_range)))
    theta = np.deg2rad(rng.uniform(-20, 20) + (90 * rng.integers(2) if elongated else 0))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return cls, unit * half @ rot.T + rng.uniform(0.05, 0.95, 2) * n


def _render(
    rng: np.random.Generator, n: int, style: SceneStyle
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]], list[np.ndarray]]:
    """One image (uint8 BGR), its YOLO box labels and each labelled object's full polygon (pixels, unclipped)."""
    img = _background(rng, n)
    _distractors(img, rng, int(rng.integers(*style.distractors)))
    count = 0 if rng.random() < style.p_empty else int(rng.integers(1, style.max_objects + 1))
    owner = np.full((n, n), -1, np.int16)
    objects = []
    for i in range(count):
        cls, poly = _place(rng, n, style)
        x0, y0 = poly.min(0).clip(0, n)
        x1, y1 = poly.max(0).clip(0, n)
        cx, cy = np.clip(poly.mean(0), 0, n - 1).astype(int)
        colour = _object_colour(
            rng, img[max(cy - 2, 0) : cy + 3, max(cx - 2, 0) : cx + 3].mean((0, 1)), style.p_low_contrast
        )
        fill = colour
        if rng.random() < 0.3:  # textured fill: same shape, varying shade
            fill = colour + rng.uniform(15, 45) * _smooth_noise(rng, n, n, int(rng.integers(3, 10)))
        cov = _blend(img, poly, fill)
        if cov is None:
            continue
        (ya, yb, xa, xb), alpha = cov
        owner[ya:yb, xa:xb][alpha >= 0.5] = i
        if rng.random() < 0.25:  # outline in another colour
            pts = np.round((poly - 0.5) * 16).astype(np.int32)
            cv2.polylines(img, [pts], True, rng.uniform(0, 255, 3).tolist(), 1, cv2.LINE_AA, 4)
        objects.append((i, cls, float(cv2.contourArea(poly.astype(np.float32))), (x0, y0, x1, y1), poly))
    _distractors(img, rng, int(rng.integers(0, 3)))
    labels, polygons = [], []
    for i, cls, area, (x0, y0, x1, y1), poly in objects:
        if (owner == i).sum() >= MIN_VISIBLE * area and x1 - x0 >= 1 and y1 - y0 >= 1:
            labels.append((cls, (x0 + x1) / 2 / n, (y0 + y1) / 2 / n, (x1 - x0) / n, (y1 - y0) / n))
            polygons.append(poly)
    return _finish(img, rng), labels, polygons


def clip_polygon(poly: np.ndarray, size: float) -> np.ndarray:
    """Sutherland-Hodgman: the part of a polygon (K, 2) inside the square [0, size]^2, as a polygon (K', 2).

    Exact for any simple polygon (convex or not) against the convex window; a concave shape cut by the border may
    get zero-width edges along it, which add no area.
    """
    for axis, bound, keep_below in ((0, 0.0, False), (0, size, True), (1, 0.0, False), (1, size, True)):
        if not len(poly):
            break
        inside = poly[:, axis] <= bound if keep_below else poly[:, axis] >= bound
        out = []
        for k in range(len(poly)):
            current, previous = poly[k], poly[k - 1]
            if inside[k] != inside[k - 1]:  # the edge crosses the boundary: keep the crossing point
                t = (bound - previous[axis]) / (current[axis] - previous[axis])
                crossing = previous + t * (current - previous)
                crossing[axis] = bound
                out.append(crossing)
            if inside[k]:
                out.append(current)
        poly = np.array(out).reshape(-1, 2)
    return poly


def extreme_points(poly: np.ndarray) -> np.ndarray:
    """(4, 2) the polygon's leftmost, topmost, rightmost and bottommost vertices (first one on ties)."""
    return poly[[poly[:, 0].argmin(), poly[:, 1].argmin(), poly[:, 0].argmax(), poly[:, 1].argmax()]]


def _keypoint_text(poly: np.ndarray, n: int) -> str:
    """The pose keypoints of one object, normalised: ``x y 2`` inside the image, ``0 0 0`` outside it."""
    values = []
    for x, y in extreme_points(poly):
        inside = 0 <= x <= n and 0 <= y <= n
        values.append(f"{x / n:.6f} {y / n:.6f} 2" if inside else "0.000000 0.000000 0")
    return " ".join(values)


def _label_lines(
    task: str, labels: list[tuple[int, float, float, float, float]], polygons: list[np.ndarray], n: int
) -> str:
    """The label file of one image in the format of ``task``."""
    if task == "detect":
        return "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)
    if task == "pose":
        return "".join(
            f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f} {_keypoint_text(poly, n)}\n"
            for (c, x, y, w, h), poly in zip(labels, polygons, strict=True)
        )
    lines = []
    for (cls, *_), poly in zip(labels, polygons, strict=True):
        points = clip_polygon(poly, float(n))
        if task == "obb":  # the rotated rectangle: four corners
            points = cv2.boxPoints(cv2.minAreaRect(points.astype(np.float32))).astype(np.float64).clip(0, n)
        points = points / n
        lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in points.reshape(-1)) + "\n")
    return "".join(lines)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera-like degradations: exposure jitter, optional blur, sensor noise, then quantise to uint8."""
    img = img * rng.uniform(0.8, 1.15) + rng.uniform(-20, 20)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.4, 0.9))
    img = img + rng.normal(0, rng.uniform(2, 9), img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _write_split(
    root: Path, split: str, seeds: list[np.random.SeedSequence], imgsz: int, style: SceneStyle, task: str = "detect"
) -> dict[str, int]:
    """Render and write one split; return simple statistics for meta.json."""
    img_dir, lab_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    stats = {"images": len(seeds), "objects": 0, "empty_images": 0}
    for idx, ss in enumerate(seeds):
        img, labels, polygons = _render(np.random.default_rng(ss), imgsz, style)
        if not cv2.imwrite(str(img_dir / f"{idx:06d}.png"), img):
            raise OSError(f"could not write {img_dir / f'{idx:06d}.png'}")
        (lab_dir / f"{idx:06d}.txt").write_text(_label_lines(task, labels, polygons, imgsz))
        stats["objects"] += len(labels)
        stats["empty_images"] += not labels
    return stats


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temp file + rename so a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _data_yaml(root: Path, classes: tuple[str, ...], task: str = "detect") -> str:
    """Ultralytics data.yaml text with an absolute dataset path, so it works from any working directory."""
    names = dict(enumerate(classes))
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": names, "nc": len(names)}
    if task == "pose":
        data.update(kpt_shape=list(KEYPOINT_SHAPE), flip_idx=KEYPOINT_FLIP)
    return yaml.safe_dump(data, sort_keys=False)


def _clear(root: Path) -> None:
    """Remove a previous (possibly interrupted) generation, refusing to touch folders we did not create."""
    ours = (root / "meta.json").exists() or (root / _MARKER).exists()
    for name in ("meta.json", "data.yaml"):
        (root / name).unlink(missing_ok=True)
    for sub in ("images", "labels"):
        if (root / sub).exists():
            if not ours:
                raise FileExistsError(f"{root / sub} exists and was not made by make_synthetic_dataset; not deleting")
            shutil.rmtree(root / sub)


def make_synthetic_dataset(
    root: str | Path,
    *,
    num_train: int = 400,
    num_val: int = 100,
    imgsz: int = 128,
    seed: int = 0,
    style: str = "hard",
    task: str = "detect",
    overwrite: bool = False,
) -> Path:
    """Write the dataset under root and return the path of its data.yaml (absolute `path:` inside).

    ``task`` is the label format (:data:`TASKS`); images are the same for every task.

    Cached: if meta.json records the same parameters (and generator version) nothing is rewritten. meta.json is
    written last, so an interrupted run is never mistaken for a complete one and is regenerated next time.
    """
    if num_train < 1 or num_val < 1 or imgsz < 16:
        raise ValueError("need num_train >= 1, num_val >= 1 and imgsz >= 16")
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not one of {list(STYLES)}")
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {list(TASKS)}")
    scene = STYLES[style]
    root = Path(root).expanduser().resolve()
    yaml_path, meta_path = root / "data.yaml", root / "meta.json"
    params = dict(generator=GENERATOR_VERSION, num_train=num_train, num_val=num_val, imgsz=imgsz, seed=seed)
    params["names"] = list(scene.classes)
    if style != "hard":  # the hard style's caches predate styles: keep their key unchanged
        params["style"] = json.loads(json.dumps({"name": style, **asdict(scene)}))  # tuples as JSON lists
    if task != "detect":  # detect caches predate tasks: keep their key unchanged
        params["task"] = task
    if not overwrite and meta_path.exists() and yaml_path.exists():
        try:
            cached = json.loads(meta_path.read_text()).get("params")
        except (json.JSONDecodeError, AttributeError):
            cached = None
        if cached == params:
            if yaml.safe_load(yaml_path.read_text()).get("path") != str(root):  # folder was moved: fix the path
                _write_atomic(yaml_path, _data_yaml(root, scene.classes, task))
            return yaml_path
    root.mkdir(parents=True, exist_ok=True)
    _clear(root)
    (root / _MARKER).touch()
    train_ss, val_ss = np.random.SeedSequence(seed).spawn(2)  # disjoint streams: no train/val duplicates
    stats = {
        "train": _write_split(root, "train", train_ss.spawn(num_train), imgsz, scene, task),
        "val": _write_split(root, "val", val_ss.spawn(num_val), imgsz, scene, task),
    }
    _write_atomic(yaml_path, _data_yaml(root, scene.classes, task))
    _write_atomic(meta_path, json.dumps({"params": params, "stats": stats}, indent=2) + "\n")
    return yaml_path
