"""Where a study's students make their confident predictions: anchors above a score, per level, on validation images.

    python benchmarks/confident_levels.py runs/yolokd_evidence_scratch baseline placebo_bckd_1e-06

For each named row and each seed of the study, the row's ``best.pt`` scores the first ``--images`` validation
images (plain resize to the study's image size, no NMS) and the anchors whose best class score is above ``--conf``
are counted per detection level (P3, P4, P5 for a YOLOv8 head), summed over the images.
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
    for row in args.rows:
        runs = args.study / "runs"
        weights = {seed: runs / f"seed{seed}" / row / "weights" / "best.pt" for seed in settings["seeds"]}
        counts = {seed: confident_per_level(path, images, args.conf) for seed, path in weights.items()}
        print(f"{row}: anchors above {args.conf} per level (P3, P4, ...) by seed: {counts}")


if __name__ == "__main__":
    main()
