"""Make the evidence benchmark's two shipped models: a pretrained YOLOv8n student and its YOLOv8s teacher.

Real students start from pretrained weights (COCO's ``yolov8n.pt``, the papers' ImageNet backbones), and so do the
teachers. Students trained from scratch for the benchmark's 12 epochs sit on the steep start of their learning
curve, where two seeds of the same run differ by 0.05 mAP50-95 and no KD gain can be told from luck. So both models
are first pretrained on an upstream set, the synthetic eight-class ``evidence`` scenes (960 train images drawn with
seed 100, a different draw and style than the benchmark's four-class ``distinct`` scenes), for 20 epochs each,
their final weights kept. The student ships as that upstream checkpoint (its class layer is re-initialised for the
benchmark's four classes when a run starts). The teacher is then fine-tuned on the benchmark's own training
images for 24 epochs by the study's teacher step (``ensure_teacher``, seed 0), as the papers' teachers are
finished models on the target data. Both files are written half-precision, without optimiser state.

    python benchmarks/pretrain_assets.py --out runs/pretrain_assets   # about 75 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from ultralytics import YOLO
from ultralytics.utils.torch_utils import strip_optimizer

from yolokd.data import make_synthetic_dataset
from yolokd.demo import CPU_SCHEDULE
from yolokd.evaluation.study import PRESETS, base_train_args, ensure_teacher

ASSETS = Path(__file__).resolve().parents[1] / "yolokd" / "assets"
UPSTREAM = dict(num_train=960, num_val=150, imgsz=160, seed=100, style="evidence")
UPSTREAM_EPOCHS = 20
TEACHER_EPOCHS = 24


def pretrain(model: str, data: Path, out: Path) -> Path:
    """Train `model` on the upstream set with the benchmark's CPU schedule; its last weights (the upstream model)."""
    name = Path(model).stem
    YOLO(model).train(
        data=str(data), epochs=UPSTREAM_EPOCHS, imgsz=UPSTREAM["imgsz"], batch=16, seed=0, device="cpu",
        project=str(out), name=f"upstream_{name}", **{**CPU_SCHEDULE, "exist_ok": True},
    )  # fmt: skip
    return out / f"upstream_{name}" / "weights" / "last.pt"


def ship(weights: Path, asset: str) -> Path:
    """Copy `weights` into yolokd/assets without optimiser state (fp16)."""
    target = ASSETS / asset
    shutil.copyfile(weights, target)
    strip_optimizer(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/pretrain_assets", help="working folder (data, runs)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    upstream_data = make_synthetic_dataset(out / "upstream_data", **UPSTREAM)
    student = ship(pretrain("yolov8n.yaml", upstream_data, out), "synthetic_yolov8n_upstream.pt")
    upstream_teacher = pretrain("yolov8s.yaml", upstream_data, out)
    preset = PRESETS["evidence"]
    explicit = dict(epochs=preset["epochs"], imgsz=preset["imgsz"], batch=preset["batch"], device="cpu")
    base = base_train_args(None, explicit, out / "data", preset["images"], preset["val_images"], preset["style"])
    weights, score = ensure_teacher(base, str(upstream_teacher), TEACHER_EPOCHS, out / "teacher")
    teacher = ship(Path(weights), "synthetic_yolov8s.pt")
    summary = {"student": str(student), "teacher": str(teacher), "teacher_score": score, "torch": torch.__version__}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
