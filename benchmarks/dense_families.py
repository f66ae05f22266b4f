#!/usr/bin/env python
r"""Dense-detector students next to YOLOv8n: each family trained from scratch with the demo's schedule, no KD.

Every model trains on the same data, seed and schedule (``yolokd.demo.CPU_SCHEDULE``: AdamW lr0 0.002, 1 warm-up
epoch, no mosaic, batch 16, validation after the last epoch), GT loss only, and its ``best.pt`` is validated by
``yolokd val``'s code (Ultralytics mAP + COCO AP). One seed: this says whether a family trains to a sensible mAP at
similar FLOPs, not which is better (the from-scratch seed-to-seed std of YOLOv8n here is 0.049, README Results).

    yolokd demo                                    # writes the demo's data under runs/yolokd_demo/data
    python benchmarks/dense_families.py --data runs/yolokd_demo/data/data.yaml --out runs/dense_families

Finished models are cached (``<out>/<model>/score.json``); writes ``<out>/dense_families.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

from yolokd.config import load_experiment
from yolokd.demo import CPU_SCHEDULE
from yolokd.engine.trainer import train_experiment
from yolokd.evaluation.validate import validate_model

MODELS = ("yolov8n.yaml", "gfl-yolov8n.yaml", "fcos-yolov8n.yaml", "retinanet-yolov8n.yaml")


def train_and_score(model: str, args: argparse.Namespace, out: Path) -> dict:
    """Train `model` with the demo schedule and validate its best.pt.

    Cached by the folder's score.json, reused only when its train arguments are the same; the cache knows nothing of
    the code, so delete the folder after changing a head or loss (an earlier table's GFL-n row was most likely such a
    stale run).
    """
    folder = out / Path(model).stem
    score_file = folder / "score.json"
    train_args = {
        **CPU_SCHEDULE, "model": model, "data": str(Path(args.data).resolve()), "epochs": args.epochs,
        "imgsz": args.imgsz, "batch": 16, "seed": args.seed, "device": "cpu", "project": str(out.resolve()),
        "name": Path(model).stem, "exist_ok": True,
    }  # fmt: skip
    if score_file.is_file():
        cached = json.loads(score_file.read_text())
        if cached.get("train_args") == train_args:
            return cached
    start = time.perf_counter()
    run = Path(train_experiment(load_experiment(train_args)))
    seconds = time.perf_counter() - start
    result = validate_model(
        run / "weights" / "best.pt", data=train_args["data"], imgsz=args.imgsz, batch=32, device="cpu", plots=False,
        verbose=False, project=str(run), name="val", exist_ok=True,
    )  # fmt: skip
    score = {
        "model": model,
        "map50_95": result.ultralytics["metrics/mAP50-95(B)"],
        "map50": result.ultralytics["metrics/mAP50(B)"],
        "coco_ap": result.coco.to_json()["ap"],
        "train_seconds": seconds,
        "train_args": train_args,
    }
    score_file.write_text(json.dumps(score, indent=1) + "\n")
    return score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data YAML (the demo's: runs/yolokd_demo/data/data.yaml)")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of model YAMLs")
    parser.add_argument("--out", default="runs/dense_families")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scores = [train_and_score(model, args, out) for model in args.models.split(",")]
    lines = [
        "| model | mAP50-95 | mAP50 | COCO AP | train s |",
        "|---|---:|---:|---:|---:|",
        *(f"| {s['model']} | {s['map50_95']:.4f} | {s['map50']:.4f} | {s['coco_ap']:.4f} | {s['train_seconds']:.0f} |"
          for s in scores),
    ]  # fmt: skip
    settings = f"Settings: data={args.data}, imgsz={args.imgsz}, epochs={args.epochs}, seed={args.seed}, demo schedule"
    (out / "dense_families.md").write_text("\n".join(lines) + f"\n\n{settings}\n")
    (out / "dense_families.json").write_text(json.dumps({"scores": scores, "settings": vars(args)}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
