#!/usr/bin/env python
r"""Can a head learn to classify? Fit each family on one training batch and report how well it tells the classes apart.

A diagnostic for slow dense heads (README, "Dense-detector students"): every model trains from scratch on the same
16 training images (no augmentation) for ``--steps`` AdamW steps with its own GT loss, then, for each GT box, the
highest-scoring prediction that overlaps it (IoU > 0.5) is taken and its arg-max class compared with the GT's. The
forward pass that scores stays in training mode (batch statistics), so BatchNorm running averages that 120 steps
cannot settle do not blur the answer. ``--gamma`` and ``--alpha`` replace RetinaNet's focal-loss γ and α.

    yolokd demo                                   # or any data YAML
    python benchmarks/dense_one_batch.py --data runs/yolokd_demo/data/data.yaml
    python benchmarks/dense_one_batch.py --data ... --models retinanet-yolov8n.yaml --gamma 0 --alpha 0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_iou
from ultralytics.cfg import get_cfg
from ultralytics.data.build import build_yolo_dataset
from ultralytics.data.utils import check_det_dataset
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.ops import xywh2xyxy

from yolokd.models import DenseDetectionModel, RetinaNetDetect, dense_head_name, resolve_model_yaml

MODELS = ("yolov8n.yaml", "gfl-yolov8n.yaml", "fcos-yolov8n.yaml", "retinanet-yolov8n.yaml")


def one_batch(data_yaml: str, imgsz: int, batch_size: int) -> tuple[dict, int, object]:
    """(batch, class count, Ultralytics cfg): the first `batch_size` training images, letterboxed to `imgsz` without
    augmentation, images in [0, 1]."""
    data = check_det_dataset(data_yaml)
    cfg = get_cfg(overrides={"imgsz": imgsz, "mode": "train"})
    dataset = build_yolo_dataset(cfg, data["train"], batch_size, data, mode="val", stride=32)
    batch = next(iter(DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate_fn)))
    batch["img"] = batch["img"].float() / 255
    return batch, data["nc"], cfg


def build(model_yaml: str, nc: int, cfg, args: argparse.Namespace):
    """A model from scratch with its GT criterion (RetinaNet's focal γ/α replaced when asked)."""
    if dense_head_name(model_yaml) is None:
        model = DetectionModel(model_yaml, nc=nc, verbose=False)
    else:
        model = DenseDetectionModel(str(resolve_model_yaml(model_yaml)), nc=nc, verbose=False)
    model.args = cfg  # the criterion reads its hyper-parameters from here
    if isinstance(model.model[-1], RetinaNetDetect) and (args.gamma is not None or args.alpha is not None):
        criterion = model.init_criterion()
        changes = {k: v for k, v in (("gamma", args.gamma), ("alpha", args.alpha)) if v is not None}
        criterion.weights = dataclasses.replace(criterion.weights, **changes)
        model.criterion = criterion
    return model


def class_accuracy(model, batch: dict) -> tuple[int, int]:
    """(correct, GT boxes with an overlapping prediction): the arg-max class of each GT's best-scoring overlap."""
    with torch.no_grad():
        decoded = model.model[-1]._inference(model(batch["img"]))  # (B, 4 + C, A), batch statistics
    correct = total = 0
    side = batch["img"].shape[-1]
    for image in range(batch["img"].shape[0]):
        mine = batch["batch_idx"] == image
        if not mine.any():
            continue
        gt_boxes, gt_classes = xywh2xyxy(batch["bboxes"][mine] * side), batch["cls"][mine].flatten().long()
        scores, classes = decoded[image, 4:].max(0)
        overlaps = box_iou(gt_boxes, xywh2xyxy(decoded[image, :4].T)) > 0.5  # (M, A)
        for gt in range(len(gt_boxes)):
            if overlaps[gt].any():
                best = torch.where(overlaps[gt], scores, torch.full_like(scores, -1)).argmax()
                correct += int(classes[best] == gt_classes[gt])
                total += 1
    return correct, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data YAML (the demo's: runs/yolokd_demo/data/data.yaml)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of model YAMLs")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gamma", type=float, default=None, help="RetinaNet focal γ (default: the head's, 2)")
    parser.add_argument("--alpha", type=float, default=None, help="RetinaNet focal α (default: the head's, 0.25)")
    args = parser.parse_args(argv)
    batch, nc, cfg = one_batch(args.data, args.imgsz, args.batch)
    print("| model | final GT loss items | class accuracy of the best overlapping prediction |")
    print("|---|---|---:|")
    for model_yaml in args.models.split(","):
        torch.manual_seed(args.seed)
        model = build(model_yaml, nc, cfg, args)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
        for _ in range(args.steps):
            loss, items = model.loss(batch)
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
        correct, total = class_accuracy(model, batch)
        terms = ", ".join(f"{name} {float(value):.3f}" for name, value in items.items())
        print(f"| {model_yaml} | {terms} | {correct}/{total} ({correct / max(total, 1):.0%}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
