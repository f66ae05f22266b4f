"""Ground truth of a YOLO-format split as COCO JSON, with the ids of Ultralytics' ``predictions.json``.

Ultralytics' ``DetectionValidator`` with ``save_json=True`` writes each prediction as

    image_id     int(stem) when the image file's stem is numeric ("000012.png" -> 12), else the stem itself
    category_id  class_map[cls]: cls + 1 for any dataset but COCO (its own 80 -> 91 map there)
    bbox         [x_left, y_top, width, height] in pixels of the original (EXIF-rotated) image

so the ground truth built here uses the same ids and units. Labels are read by Ultralytics' own
``verify_image_label`` (segment rows become their boxes, duplicate rows are dropped, corrupt files are skipped,
exactly as its data loader does). A box's ``area`` is width x height in pixels², which sorts it into COCO's small
(< 32²), medium (< 96²) or large range; COCO's released annotations use the mask area instead, so AP_S/M/L on
COCO itself differ slightly from the official numbers.

The JSON is cached beside the split's label folder (``labels/val.coco.json``; under ``~/.cache/yolokd/coco`` when
that folder is read-only) and rebuilt when any image or label file's path, mtime or size changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CACHE_VERSION = "yolokd-coco-gt-1"  # bump when the JSON layout changes, so caches rebuild
USER_CACHE = Path("~/.cache/yolokd/coco")


def image_id(image_file: str | Path) -> int | str:
    """The ``image_id`` Ultralytics writes for `image_file`: int(stem) if the stem is numeric, else the stem."""
    stem = Path(image_file).stem
    return int(stem) if stem.isnumeric() else stem


def label_files_for(image_files: Sequence[str | Path]) -> list[str]:
    """Ultralytics' label path of each image (the last ``/images/`` becomes ``/labels/``, extension ``.txt``)."""
    from ultralytics.data.utils import img2label_paths

    return img2label_paths([os.fspath(path) for path in image_files])


def cache_key(image_files: Sequence[str | Path], class_map: Sequence[int]) -> str:
    """SHA-256 over every image and label file's path, mtime and size (-1 for a missing label) and the class map."""
    digest = hashlib.sha256(f"{CACHE_VERSION}\n{list(class_map)}\n".encode())
    for image_file, label_file in zip(image_files, label_files_for(image_files), strict=True):
        for path in (os.fspath(image_file), label_file):
            try:
                stat = os.stat(path)
                digest.update(f"{path}\t{stat.st_mtime_ns}\t{stat.st_size}\n".encode())
            except FileNotFoundError:
                digest.update(f"{path}\t-1\t-1\n".encode())
    return digest.hexdigest()


def build_coco_gt(
    image_files: Sequence[str | Path], class_map: Sequence[int], names: dict[int, str] | None = None
) -> dict[str, Any]:
    """COCO ground-truth dict of the images and their YOLO label files.

    Args:
        image_files: the split's images, in any order (Ultralytics' ``dataset.im_files``).
        class_map: ``class_map[cls]`` is the COCO ``category_id`` of YOLO class ``cls`` (``range(1, nc + 1)``).
        names: class names by YOLO index, for the ``categories`` entries.

    Returns:
        ``{"info", "images", "annotations", "categories"}``. Boxes are ``[x_left, y_top, w, h]`` in pixels;
        annotation ids start at 1 (pycocotools treats id 0 as "unmatched"). ``info.skipped`` lists the images whose
        image or label file Ultralytics would reject, with its reason; they are left out, as its loader leaves them.

    Raises:
        ValueError: two images map to the same ``image_id`` (e.g. ``a/1.png`` and ``b/001.jpg``), which would merge
            their predictions in ``predictions.json``.
    """
    from ultralytics.data.utils import verify_image_label

    names = names or {index: str(index) for index in range(len(class_map))}
    images, annotations, skipped, owners = [], [], [], {}
    for image_file, label_file in zip(image_files, label_files_for(image_files), strict=True):
        image_file = os.fspath(image_file)
        _, labels, shape, *_, message = verify_image_label(
            (image_file, label_file, "", False, len(class_map), 0, 0, False)
        )
        if labels is None:
            skipped.append({"file": image_file, "reason": message})
            continue
        identifier = image_id(image_file)
        if identifier in owners:
            raise ValueError(
                f"images {owners[identifier]} and {image_file} both get image_id {identifier!r} in Ultralytics' "
                "predictions.json (the id is the file stem); rename one so stems are unique within the split"
            )
        owners[identifier] = image_file
        height, width = shape
        images.append({"id": identifier, "file_name": Path(image_file).name, "width": width, "height": height})
        annotations += _annotations(labels.tolist(), identifier, width, height, class_map, len(annotations) + 1)
    categories = [
        {"id": int(category), "name": names.get(index, str(index))} for index, category in enumerate(class_map)
    ]
    info = {"description": "YOLO labels converted by yolokd.evaluation.coco_gt", "skipped": skipped}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _annotations(
    labels: list[list[float]], identifier: int | str, width: int, height: int, class_map: Sequence[int], first_id: int
) -> list[dict[str, Any]]:
    """COCO annotations of one image from its YOLO rows ``[cls, x_center, y_center, w, h]`` (normalised)."""
    annotations = []
    for offset, (cls, x_center, y_center, box_width, box_height) in enumerate(labels):
        w, h = box_width * width, box_height * height
        annotations.append(
            {
                "id": first_id + offset,
                "image_id": identifier,
                "category_id": int(class_map[int(cls)]),
                "bbox": [x_center * width - w / 2, y_center * height - h / 2, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    return annotations


def default_cache_path(image_files: Sequence[str | Path]) -> Path:
    """``<common label folder>.coco.json``, e.g. ``datasets/x/labels/val.coco.json``."""
    label_dirs = {os.path.dirname(path) for path in label_files_for(image_files)}
    folder = Path(os.path.commonpath(sorted(label_dirs)))
    return folder.with_name(f"{folder.name}.coco.json")


def coco_gt_for_split(
    image_files: Sequence[str | Path],
    class_map: Sequence[int],
    names: dict[int, str] | None = None,
    cache_path: str | Path | None = None,
) -> Path:
    """Path of the split's COCO ground-truth JSON, built once and rebuilt only when a file changes (see module doc).

    Args:
        image_files: the split's images (Ultralytics' ``dataset.im_files``).
        class_map: YOLO class index -> COCO ``category_id``.
        names: class names for the ``categories``.
        cache_path: where to keep the JSON; default ``<label folder>.coco.json``, falling back to
            ``~/.cache/yolokd/coco/<hash>.json`` when that folder is not writable.
    """
    if not image_files:
        raise ValueError("image_files is empty: the split has no images to build ground truth from")
    key = cache_key(image_files, class_map)
    path = Path(cache_path) if cache_path is not None else default_cache_path(image_files)
    fallback = USER_CACHE.expanduser() / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}.json"
    for candidate in (path, fallback):
        if _cached_key(candidate) == key:
            return candidate
    gt = build_coco_gt(image_files, class_map, names)
    gt["info"]["yolokd_cache_key"] = key
    for candidate in (path, fallback):
        try:
            _write_atomic(candidate, json.dumps(gt))
            return candidate
        except OSError:
            continue
    raise OSError(f"could not write the COCO ground truth to {path} or {fallback}")


def _cached_key(path: Path) -> str | None:
    try:
        with open(path) as file:
            return json.load(file).get("info", {}).get("yolokd_cache_key")
    except (OSError, ValueError, AttributeError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    """Temp file + rename, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
