#!/usr/bin/env python
r"""Cost of PGD's prediction-guided weighting (PGW) and of the PGD / FGD losses against GT count and image size.

Rows: every (image size, GTs per image) pair. Columns (median of --repeats timed runs after --warmup):
    pgw_mask         ``PGDLoss.weight_masks``: the cls + box PGW masks and the background indicator (no grad).
    pgd_loss         PGD forward + backward on stage-0 features of the head widths (aligners included).
    fgd_loss         FGD forward + backward on neck features of the head widths (GT masks, GcBlocks included).
    teacher_forward  the teacher model's forward pass (eval, no_grad) on the same batch: the floor any KD pays.
The inputs are random tensors of the real shapes (widths read from the student/teacher model YAMLs); GT boxes are
random boxes of 2-50% of the image side. Speed does not depend on the values.

Example:
    python benchmarks/pgd_mask.py --threads 1 --batch 2 --imgsz 320,640 --gts 1,10,100 --out /tmp/pgd_mask.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch
import ultralytics
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.tal import make_anchors

from yolokd.heads.detect import DetectHeadAdapter
from yolokd.losses.fgd import FGDLoss, FGDParams
from yolokd.losses.pgd import PGDLoss, PGDParams
from yolokd.views import HeadSpec, Targets, View


def random_gts(batch: int, count: int, imgsz: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M, 4) xyxy pixel boxes of 2-50% of the image side, fully inside the image, and (B, M) labels."""
    size = imgsz * (0.02 + 0.48 * torch.rand(batch, count, 2, generator=generator))
    corner = (imgsz - size) * torch.rand(batch, count, 2, generator=generator)
    labels = torch.randint(0, 80, (batch, count), generator=generator)
    return torch.cat([corner, corner + size], dim=-1), labels


def make_inputs(spec_s: HeadSpec, spec_t: HeadSpec, batch: int, imgsz: int, count: int, seed: int):
    """Student View, teacher View and Targets with random values of the real shapes."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [int(imgsz // s) for s in spec_t.strides]
    grids = [torch.zeros(1, 1, n, n) for n in sizes]
    anchors, strides = make_anchors(grids, torch.tensor(spec_t.strides), 0.5)
    points = anchors * strides

    def view(spec: HeadSpec, requires_grad: bool) -> View:
        def feature(width: int, n: int) -> torch.Tensor:
            return torch.randn(batch, width, n, n, generator=generator).requires_grad_(requires_grad)

        extent = 4 + 60 * torch.rand(batch, len(points), 4, generator=generator)
        return View(
            feats=[feature(c, n) for c, n in zip(spec.feat_channels, sizes, strict=True)],
            cls_logits=torch.randn(batch, len(points), spec.num_classes, generator=generator) - 3,
            box_output=torch.zeros(batch, len(points), 4 * spec.reg_max),
            boxes=torch.cat([points - extent[..., :2], points + extent[..., 2:]], dim=-1),
            anchors=anchors,
            strides=strides,
            reg_max=spec.reg_max,
            stages={part: [[feature(spec.stage_channels[part], n) for n in sizes]] for part in ("box", "cls")},
        )

    gt_boxes, gt_labels = random_gts(batch, count, imgsz, generator)
    targets = Targets(
        fg_mask=torch.zeros(batch, len(points), dtype=torch.bool),
        gt_index=torch.zeros(batch, len(points), dtype=torch.long),
        target_boxes=torch.zeros(batch, len(points), 4),
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        gt_mask=torch.ones(batch, count, dtype=torch.bool),
        image_size=torch.tensor([float(imgsz), float(imgsz)]),
    )
    return view(spec_s, True), view(spec_t, False), targets


def median_ms(step: Callable[[], None], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def loss_step(loss: torch.nn.Module, student: View, teacher: View, targets: Targets) -> Callable[[], None]:
    def step() -> None:
        loss.zero_grad(set_to_none=True)
        sum(loss(student, teacher, targets).values()).backward()

    return step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="yolov8n.yaml", help="student model YAML (only its widths are used)")
    parser.add_argument("--teacher", default="yolov8s.yaml", help="teacher model YAML (widths + the forward row)")
    parser.add_argument("--imgsz", default="320,640", help="comma-separated square image sizes")
    parser.add_argument("--gts", default="1,10,100", help="comma-separated GT boxes per image")
    parser.add_argument("--batch", type=int, default=2, help="images per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per cell")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--note", default="", help="free text for the header, e.g. 'machine under load'")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    student_model = DetectionModel(args.student, nc=80, verbose=False)
    teacher_model = DetectionModel(args.teacher, nc=80, verbose=False).eval().requires_grad_(False)
    spec_s, spec_t = DetectHeadAdapter(student_model).spec, DetectHeadAdapter(teacher_model).spec
    pgd, fgd = PGDLoss(PGDParams(), spec_t, spec_s), FGDLoss(FGDParams(), spec_t, spec_s)
    lines = [
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- device: cpu ({platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()})",
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"ultralytics {ultralytics.__version__}",
        f"- widths: student {args.student} <- teacher {args.teacher}, batch {args.batch}, "
        f"median of {args.repeats} runs after {args.warmup} warm-up",
        *([f"- note: {args.note}"] if args.note else []),
        "",
        "| imgsz | GTs/image | pgw_mask ms | pgd_loss ms (fwd+bwd) | fgd_loss ms (fwd+bwd) | teacher_forward ms "
        "| pgw / teacher | pgd / teacher |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for imgsz in (int(v) for v in args.imgsz.split(",")):
        images = torch.randn(args.batch, 3, imgsz, imgsz)
        with torch.no_grad():
            teacher_ms = median_ms(lambda images=images: teacher_model(images), args.repeats, args.warmup)
        for count in (int(v) for v in args.gts.split(",")):
            student, teacher, targets = make_inputs(spec_s, spec_t, args.batch, imgsz, count, args.seed)
            mask_ms = median_ms(lambda t=teacher, g=targets: pgd.weight_masks(t, g), args.repeats, args.warmup)
            pgd_ms = median_ms(loss_step(pgd, student, teacher, targets), args.repeats, args.warmup)
            fgd_ms = median_ms(loss_step(fgd, student, teacher, targets), args.repeats, args.warmup)
            lines.append(
                f"| {imgsz} | {count} | {mask_ms:.1f} | {pgd_ms:.1f} | {fgd_ms:.1f} | {teacher_ms:.1f} "
                f"| {mask_ms / teacher_ms:.3f} | {pgd_ms / teacher_ms:.2f} |"
            )
            print(lines[-1], flush=True)
    report = "\n".join(lines)
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return report


if __name__ == "__main__":
    main()
