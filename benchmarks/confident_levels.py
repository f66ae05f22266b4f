"""Which detection levels a study's students use: confident anchors on validation images, TAL positives on training
images, per level.

    python benchmarks/confident_levels.py runs/yolokd_evidence_scratch baseline placebo_bckd_1e-06

For each named row and each seed of the study, the row's ``best.pt`` scores the first ``--images`` validation
images (plain resize to the study's image size, no NMS) and the anchors whose best class score is above ``--conf``
are counted per detection level (P3, P4, P5 for a YOLOv8 head), summed over the images. Then the student's own GT
loss (Ultralytics' ``v8DetectionLoss``, its task-aligned assigner) runs on the first ``--images`` training images
with their labels, and the anchors its assigner makes positive are counted per level: where the GT loss trains.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from ultralytics import YOLO


def load_images(folder: Path, count: int, size: int) -> torch.Tensor:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:count]
    images = [cv2.resize(cv2.imread(str(p)), (size, size))[:, :, ::-1] for p in paths]
    return torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def confident_per_level(weights: Path, images: torch.Tensor, conf: float) -> list[int]:
    model = YOLO(str(weights)).model.float().eval()
    scores = model(images)[0][:, 4:].amax(1)  # (B, anchors): best class score per anchor, levels in stride order
    size = images.shape[-1]
    cells = [(size // int(stride)) ** 2 for stride in model.stride]
    return [int((part > conf).sum()) for part in scores.split(cells, dim=1)]


def load_labelled(folder: Path, count: int, size: int) -> dict[str, torch.Tensor]:
    """A training batch as Ultralytics' loss takes it: images and (batch_idx, cls, normalised xywh) from labels/."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:count]
    index, classes, boxes = [], [], []
    for i, path in enumerate(paths):
        label = Path(str(path).replace("/images/", "/labels/")).with_suffix(".txt")
        for line in label.read_text().splitlines():
            if line.strip():
                values = [float(v) for v in line.split()]
                index.append(i), classes.append(values[0]), boxes.append(values[1:5])
    return {
        "img": load_images(folder, count, size),
        "batch_idx": torch.tensor(index),
        "cls": torch.tensor(classes)[:, None],
        "bboxes": torch.tensor(boxes),
    }


def positives_per_level(weights: Path, batch: dict[str, torch.Tensor]) -> list[int]:
    """Anchors the student's own task-aligned assigner makes positive on `batch`, per level."""
    from ultralytics.cfg import get_cfg

    model = YOLO(str(weights)).model.float()
    model.args = get_cfg()  # the default box / cls / dfl gains; the assignment does not depend on them
    criterion = model.init_criterion()
    assign, captured = criterion.assigner.forward, {}

    def recording(*args, **kwargs):
        result = assign(*args, **kwargs)
        captured["fg"] = result[3]  # (B, anchors) foreground mask
        return result

    criterion.assigner.forward = recording
    model.train()  # the training-mode head output the loss takes (BatchNorm uses the batch's statistics)
    with torch.no_grad():
        criterion(model(batch["img"]), batch)
    size = batch["img"].shape[-1]
    cells = [(size // int(stride)) ** 2 for stride in model.stride]
    return [int(part.sum()) for part in captured["fg"].split(cells, dim=1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("rows", nargs="+")
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--conf", type=float, default=0.25)
    args = parser.parse_args()
    settings = json.loads((args.study / "study.json").read_text())["settings"]
    size = int(settings["train_args"]["imgsz"])
    images = load_images(args.study / "data" / "images" / "val", args.images, size)
    train = load_labelled(args.study / "data" / "images" / "train", args.images, size)
    for row in args.rows:
        runs = args.study / "runs"
        weights = {seed: runs / f"seed{seed}" / row / "weights" / "best.pt" for seed in settings["seeds"]}
        counts = {seed: confident_per_level(path, images, args.conf) for seed, path in weights.items()}
        print(f"{row}: anchors above {args.conf} per level (P3, P4, ...) by seed: {counts}")
        positives = {seed: positives_per_level(path, train) for seed, path in weights.items()}
        print(f"{row}: TAL positives per level on {args.images} training images by seed: {positives}")


if __name__ == "__main__":
    main()
