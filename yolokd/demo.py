"""``yolokd demo``: teacher -> baseline student -> distilled student on the synthetic set, on CPU, in minutes.

The teacher is a finished model, as in real use: by default the YOLOv8s shipped in ``yolokd/assets`` (trained
24 epochs on the synthetic set's ``distinct`` scenes), so the demo spends its minutes on the two students, which
are the from-scratch benchmark's seed-0 runs (README, Results). Every number printed is measured by this run: both
students are trained with the same data, schedule and seed (they differ only by the distillation losses), side by
side on two cores, then all three models are validated on the same split. ``teacher=yolov8s.yaml`` trains a
teacher first instead (about 9 minutes); ``student=`` takes a pretrained student (a ``.pt``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from yolokd.config import load_experiment
from yolokd.data import make_synthetic_dataset

# The demo's teacher: YOLOv8s trained from scratch on the synthetic "distinct" scenes (480 train images, 160 px,
# 24 epochs, seed 0; mAP50-95 0.531 on their 150 validation images), so the demo need not train one.
SHIPPED_TEACHER = Path(__file__).parent / "assets" / "synthetic_yolov8s_scratch.pt"
# The evidence benchmark's pair (benchmarks/pretrain_assets.py makes both): a YOLOv8n and a YOLOv8s pretrained 20
# epochs on an upstream set (the eight-class "evidence" scenes); the YOLOv8s then fine-tuned 24 epochs on the
# "distinct" scenes (mAP50-95 0.773). The student is the upstream checkpoint (its class layer re-initialised per run).
EVIDENCE_TEACHER = Path(__file__).parent / "assets" / "synthetic_yolov8s.pt"
EVIDENCE_STUDENT = Path(__file__).parent / "assets" / "synthetic_yolov8n_upstream.pt"

# The demo's training schedule (also used by `yolokd study` on the synthetic set). Small CPU budget, from scratch:
# AdamW at a fixed lr, a 1-epoch warm-up and no mosaic (at 128 px mosaic shrinks objects to a few pixels) learn
# fastest in the few hundred steps available; validation runs once at the end, because NMS on early, unconfident
# models costs seconds per epoch on a CPU.
CPU_SCHEDULE: dict[str, Any] = dict(
    deterministic=True,
    workers=0,
    exist_ok=True,
    plots=False,
    patience=0,
    optimizer="AdamW",
    lr0=0.002,
    warmup_epochs=1,
    mosaic=0.0,
    close_mosaic=0,
    val=False,
)


@dataclass
class ModelScore:
    """Validation result of one trained model."""

    role: str
    model: str
    params_m: float
    gflops_640: float
    map50_95: float
    map50: float
    train_seconds: float


@dataclass
class DemoReport:
    """The three scores plus the gain of distillation and the share of the teacher-student gap it closed."""

    scores: list[ModelScore]
    settings: dict[str, Any]

    @property
    def gain(self) -> float:
        """mAP50-95 of the distilled student minus the baseline's."""
        return self.scores[2].map50_95 - self.scores[1].map50_95

    @property
    def gap_closed(self) -> float:
        """(distilled - baseline) / (teacher - baseline), NaN when the teacher is not better than the baseline."""
        gap = self.scores[0].map50_95 - self.scores[1].map50_95
        return self.gain / gap if gap > 0 else float("nan")

    def __str__(self) -> str:
        head = (
            "| model | role | params (M) | GFLOPs@640 | mAP50-95 | mAP50 | train time (s) |\n"
            "|---|---|---|---|---|---|---|"
        )
        rows = [
            f"| {s.model} | {s.role} | {s.params_m:.2f} | {s.gflops_640:.1f} | {s.map50_95:.4f} | {s.map50:.4f} | "
            f"{s.train_seconds:.0f} |"
            for s in self.scores
        ]
        summary = (
            f"\nDistillation gain: {self.gain:+.4f} mAP50-95; teacher-student gap closed: {self.gap_closed:.1%}\n"
            f"Settings: {self.settings}"
        )
        return "\n".join([head, *rows]) + summary


def _train(args: dict[str, Any], teacher: str | None, distill: list[dict]) -> tuple[Path, float]:
    from yolokd.engine.trainer import train_experiment

    experiment = load_experiment({**args, "teacher": teacher, "distill": distill} if distill else args)
    start = time.perf_counter()
    run_dir = train_experiment(experiment)
    return run_dir / "weights" / "best.pt", time.perf_counter() - start


def _score(role: str, model_name: str, weights: Path, data: Path, imgsz: int, seconds: float) -> ModelScore:
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops, get_num_params

    model = YOLO(str(weights))
    metrics = model.val(data=str(data), imgsz=imgsz, batch=32, device="cpu", plots=False, verbose=False)
    return ModelScore(
        role=role,
        model=model_name,
        params_m=get_num_params(model.model) / 1e6,
        gflops_640=get_flops(model.model, 640),
        map50_95=float(metrics.box.map),
        map50=float(metrics.box.map50),
        train_seconds=seconds,
    )


def run_demo(
    out: str = "runs/yolokd_demo",
    images: int = 480,
    val_images: int = 150,
    imgsz: int = 160,
    epochs: int = 12,
    teacher: str = str(SHIPPED_TEACHER),
    teacher_epochs: int = 24,
    student: str = "yolov8n.yaml",
    method: str = "crosskd",
    batch: int = 16,
    seed: int = 0,
    device: str = "cpu",
    style: str = "distinct",
) -> DemoReport:
    """Make the synthetic set, get the teacher, train baseline and distilled student, validate all three, report.

    `teacher` is a trained checkpoint (default: the shipped one) or a model YAML, which is then trained for
    `teacher_epochs` first. The two students share everything but the KD losses. Results go to
    ``{out}/demo_results.{md,json}``.
    """
    root = Path(out).resolve()
    data = make_synthetic_dataset(
        root / "data", num_train=images, num_val=val_images, imgsz=imgsz, seed=seed, style=style
    )
    common = dict(data=str(data), imgsz=imgsz, batch=batch, seed=seed, device=device, project=str(root), **CPU_SCHEDULE)
    if teacher.endswith(".yaml"):
        teacher_args = {**common, "model": teacher, "epochs": teacher_epochs, "name": "teacher"}
        teacher_args["close_mosaic"] = max(teacher_epochs // 5, 1)
        teacher_weights, teacher_seconds = _train(teacher_args, None, [])
        teacher_name, teacher_role = teacher.removesuffix(".yaml"), f"teacher ({teacher_epochs} epochs)"
    else:
        teacher_weights, teacher_seconds = Path(teacher), 0.0
        shipped = teacher_weights.resolve() == SHIPPED_TEACHER.resolve()
        teacher_role = "teacher (shipped with yolokd)" if shipped else "teacher (given)"
        teacher_name = _model_name(teacher_weights)
    student_args = {**common, "model": student, "epochs": epochs}
    (baseline_weights, baseline_seconds), (kd_weights, kd_seconds) = _train_students(
        student_args, str(teacher_weights), method
    )
    settings = dict(
        images=images,
        val_images=val_images,
        imgsz=imgsz,
        epochs=epochs,
        teacher=str(teacher),
        method=method,
        batch=batch,
        seed=seed,
        device=device,
        style=style,
    )
    student_name = student.removesuffix(".yaml") if student.endswith(".yaml") else _model_name(Path(student))
    report = DemoReport(
        scores=[
            _score(teacher_role, teacher_name, teacher_weights, data, imgsz, teacher_seconds),
            _score(
                f"baseline student ({epochs} epochs)", student_name, baseline_weights, data, imgsz, baseline_seconds
            ),
            _score(f"{method} student ({epochs} epochs)", student_name, kd_weights, data, imgsz, kd_seconds),
        ],
        settings=settings,
    )
    (root / "demo_results.md").write_text(str(report) + "\n")
    (root / "demo_results.json").write_text(
        json.dumps(
            {
                "scores": [asdict(s) for s in report.scores],
                "gain": report.gain,
                "gap_closed": report.gap_closed,
                "settings": settings,
            },
            indent=2,
        )
    )
    return report


def _train_students(
    student_args: dict[str, Any], teacher: str, method: str
) -> tuple[tuple[Path, float], tuple[Path, float]]:
    """(baseline, distilled student) as (best.pt, seconds). Ultralytics trains on one thread on a small CPU, so with
    two or more cores the baseline trains in a second process beside the distilled student (quiet, same numbers)."""
    baseline_args = {**student_args, "name": "baseline"}
    kd_run = ({**student_args, "name": f"student_{method}"}, teacher, [{"loss": m} for m in method.split("+")])
    if str(student_args.get("device")) != "cpu" or (os.cpu_count() or 1) < 2:
        return _train(baseline_args, None, []), _train(*kd_run)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        baseline = pool.submit(_train, {**baseline_args, "verbose": False}, None, [])
        distilled = _train(*kd_run)
        return baseline.result(), distilled


def _model_name(weights: Path) -> str:
    """The model's YAML stem (``yolov8s``) as the checkpoint records it, else the file stem."""
    from ultralytics.nn.tasks import load_checkpoint

    model, _ = load_checkpoint(weights, device="cpu")
    return Path(str(model.yaml.get("yaml_file", weights.name))).stem
