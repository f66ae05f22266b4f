#!/usr/bin/env python
r"""Per-step cost of yolokd distillation against plain training, the teacher floor and Ultralytics' own KD.

All rows run in one process, on one synthetic batch, with the same student architecture (each row trains its own
copy of one initial student). A step is forward + loss + backward + optimiser step(s), as Ultralytics' trainer
does it (autocast, GradScaler, grad-norm clip 10); EMA, data loading and gradient accumulation are left out.

Rows:
    student            plain Ultralytics step, criterion = the model's own v8DetectionLoss / E2ELoss.
    teacher_forward    teacher forward alone (eval, no_grad, raw head outputs; fp16 weights under AMP on CUDA).
    floor              teacher forward + plain student step, timed as one step: what any distillation must pay.
    yolokd_<method>    student step with yolokd's DistillationCriterion (+ KD optimiser step when it has params).
    ultralytics_native Ultralytics' DistillationModel(student_model=..., teacher_model=<checkpoint>) step.

Example:
    python benchmarks/kd_step.py --student yolov8n.yaml --teacher yolov8s.yaml --imgsz 320 --batch 8 \
        --steps 20 --warmup 5 --device cpu --methods bckd,mimic --out benchmarks/results/kd_step_cpu.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import os
import platform
import re
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach a hub from a benchmark

import numpy as np
import torch
import ultralytics
from torch import Tensor, nn
from ultralytics.cfg import get_cfg
from ultralytics.nn.distill_model import DistillationModel
from ultralytics.nn.tasks import DetectionModel

from yolokd.config import LossEntry
from yolokd.engine.criterion import DistillationCriterion
from yolokd.engine.distiller import Distiller, load_teacher
from yolokd.engine.trainer import build_kd_optimizer
from yolokd.heads import adapter_for
from yolokd.losses import LOSSES

LR, MOMENTUM, DECAY = 0.01, 0.937, 5e-4  # Ultralytics' SGD defaults (lr0, momentum, weight_decay)
MIB = 2**20
Step = Callable[[], None]
NATIVE = "ultralytics_native"


@dataclass
class Setup:
    """Everything the rows share: device, AMP, the batch, the initial student and the teacher checkpoint."""

    device: torch.device
    amp: bool
    batch: dict[str, Tensor]
    student: DetectionModel
    teacher_path: Path


@dataclass
class Row:
    """One table row: per-step times (ms), peak memory (MiB) and a note (why n/a, or how it was computed)."""

    name: str
    times_ms: list[float] = field(default_factory=list)
    median_ms: float | None = None
    p90_ms: float | None = None
    peak_mib: float | None = None
    note: str = ""

    def summarise(self) -> Row:
        """Fill median and p90 from the measured times."""
        if self.times_ms:
            self.median_ms = float(np.median(self.times_ms))
            self.p90_ms = float(np.percentile(self.times_ms, 90))
        return self


# --- inputs -----------------------------------------------------------------------------------------------------
def make_batch(batch_size: int, imgsz: int, nc: int, device: torch.device, seed: int) -> dict[str, Tensor]:
    """Synthetic batch in Ultralytics' train format: 1-6 random boxes per image, normalised xywh."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 7, (batch_size,), generator=gen)
    n = int(counts.sum())
    centres = torch.rand(n, 2, generator=gen) * 0.7 + 0.15
    sizes = torch.rand(n, 2, generator=gen) * 0.25 + 0.05
    batch = {
        "img": torch.rand(batch_size, 3, imgsz, imgsz, generator=gen),
        "batch_idx": torch.repeat_interleave(torch.arange(batch_size), counts).float(),
        "cls": torch.randint(0, nc, (n, 1), generator=gen).float(),
        "bboxes": torch.cat((centres, sizes), 1),
    }
    return {key: value.to(device) for key, value in batch.items()}


def build_student(model_yaml: str, nc: int, imgsz: int, device: torch.device, seed: int) -> DetectionModel:
    """YAML-built student in train mode with ``args`` set, as the Ultralytics trainer leaves it."""
    torch.manual_seed(seed)
    model = DetectionModel(model_yaml, nc=nc, verbose=False)
    model.names = {i: f"class{i}" for i in range(nc)}
    model.args = get_cfg(overrides={"imgsz": imgsz})
    return model.to(device).train()


def save_teacher(model_yaml: str, nc: int, path: Path, seed: int) -> Path:
    """Stand-in teacher checkpoint (random weights, fp16, Ultralytics format) so the real loading path is used."""
    torch.manual_seed(seed)
    model = DetectionModel(model_yaml, nc=nc, verbose=False)
    model.names = {i: f"class{i}" for i in range(nc)}
    torch.save({"model": model.half(), "train_args": {}}, path)
    return path


# --- steps ------------------------------------------------------------------------------------------------------
def sgd(params: list[nn.Parameter]) -> torch.optim.SGD:
    """Ultralytics-style SGD (nesterov, momentum 0.937)."""
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=DECAY)


def train_step(
    model: nn.Module,
    setup: Setup,
    kd_modules: nn.Module | None = None,
    check: Callable[[], None] | None = None,
) -> Step:
    """One Ultralytics train step on ``model.loss(batch)``; ``kd_modules`` get their own optimiser, stepped first.

    ``check`` runs between backward and the optimiser steps (yolokd's non-finite guard).
    """
    optimizer = sgd([p for p in model.parameters() if p.requires_grad])
    kd_optimizer = build_kd_optimizer(kd_modules, "SGD", LR, MOMENTUM, DECAY) if kd_modules is not None else None
    scaler = torch.amp.GradScaler("cuda", enabled=setup.amp)

    def step() -> None:
        with torch.autocast(setup.device.type, enabled=setup.amp):
            loss, _ = model.loss(setup.batch)
            loss = loss.sum()
        scaler.scale(loss).backward()
        if check is not None:
            check()
        if kd_optimizer is not None:
            scaler.unscale_(kd_optimizer)
            nn.utils.clip_grad_norm_(kd_modules.parameters(), max_norm=10.0)
            scaler.step(kd_optimizer)
            kd_optimizer.zero_grad()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()

    return step


def student_row(setup: Setup) -> Step:
    """Plain Ultralytics student step."""
    student = copy.deepcopy(setup.student)
    student.criterion = student.init_criterion()
    return train_step(student, setup)


def teacher_row(setup: Setup) -> Step:
    """Teacher forward alone, loaded and cast exactly as yolokd's trainer does it."""
    teacher = load_teacher(setup.teacher_path, setup.device)
    if setup.amp:
        teacher.half()
    adapter = adapter_for(teacher)
    images = setup.batch["img"] if setup.amp else setup.batch["img"].to(next(teacher.parameters()).dtype)

    @torch.no_grad()
    def step() -> None:
        with torch.autocast(setup.device.type, enabled=setup.amp), adapter.raw_outputs():
            teacher(images)

    return step


def floor_step(setup: Setup) -> Step:
    """The floor measured as one step (teacher forward, then the plain student step), so that it sees the same
    cache and allocator state as a distillation step rather than being a sum of two separately timed rows."""
    teacher_step, student_step = teacher_row(setup), student_row(setup)

    def step() -> None:
        teacher_step()
        student_step()

    return step


def yolokd_row(setup: Setup, method: str) -> Step:
    """Student step with yolokd's DistillationCriterion for one method, plus its KD optimiser and NaN guard."""
    student = copy.deepcopy(setup.student)
    teacher = load_teacher(setup.teacher_path, setup.device)
    distiller = Distiller(teacher, student, [LossEntry(method, LOSSES[method].Params())], setup.device)
    if setup.amp:  # AMP is CUDA-only here, as in the trainer
        distiller.use_half_teacher()
    criterion = DistillationCriterion(student.init_criterion(), student, distiller)
    student.criterion = criterion

    def check() -> None:  # the trainer's one host sync per optimiser step
        if criterion.nonfinite.any():
            raise FloatingPointError(f"non-finite KD term in {method}")

    inner = train_step(student, setup, kd_modules=distiller.losses, check=check)

    def step() -> None:  # the trainer records the student's stages from batch start to batch end
        with criterion.recording():
            inner()

    return step


def native_row(setup: Setup) -> Step:
    """Ultralytics' DistillationModel on a fresh student copy; its projector trains with the student's optimiser."""
    model = DistillationModel(teacher_model=str(setup.teacher_path), student_model=copy.deepcopy(setup.student))
    model.train()
    model.criterion = model.init_criterion()
    return train_step(model, setup)


# --- measuring --------------------------------------------------------------------------------------------------
def _proc_status_mib(key: str) -> float:
    """VmRSS / VmHWM of this process in MiB (Linux); the process' peak RSS from getrusage elsewhere."""
    try:
        text = Path("/proc/self/status").read_text()
        return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_now(device: torch.device) -> float:
    """Free what can be freed and return the memory in use (MiB): CUDA allocated, or process RSS."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return torch.cuda.memory_allocated(device) / MIB
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back so RSS reflects live memory
    return _proc_status_mib("VmRSS")


def reset_peak(device: torch.device) -> None:
    """Restart peak tracking from the current usage."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def peak_memory(device: torch.device) -> float:
    """Peak memory (MiB) since ``reset_peak``: CUDA max allocated, or peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    return _proc_status_mib("VmHWM")


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work so wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(build: Callable[[], Step], device: torch.device, steps: int, warmup: int) -> tuple[list[float], float]:
    """Build a row's models, warm up, time ``steps`` steps; return (times ms, peak MiB counted from before build)."""
    baseline = memory_now(device)
    step = build()
    reset_peak(device)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times, peak_memory(device) - baseline


def measure_rows(builders: dict[str, Callable[[], Step]], setup: Setup, args: argparse.Namespace) -> list[Row]:
    """Measure every row, the whole sequence ``--rounds`` times (so load drift hits all rows alike).

    Only the Ultralytics-native row may fail: it becomes an n/a row saying why; any other failure is raised.
    """
    rows = {name: Row(name) for name in builders}
    for round_index in range(args.rounds):
        for name, build in builders.items():
            row = rows[name]
            if row.note:  # already n/a
                continue
            try:
                times, peak = measure(build, setup.device, args.steps, args.warmup)
            except Exception as error:  # Ultralytics' wrapper on an unsupported pair: report it, keep the table
                if name != NATIVE:
                    raise
                row.note = f"n/a: {type(error).__name__}: {error}".replace("\n", " ")[:300]
                print(f"  {name}: {row.note}", flush=True)
                continue
            row.times_ms += times
            row.peak_mib = max(peak, row.peak_mib or 0.0)
            print(f"  round {round_index + 1} {name}: median {np.median(times):.1f} ms", flush=True)
    return [row.summarise() for row in rows.values()]


# --- report -----------------------------------------------------------------------------------------------------
def add_ratios(rows: list[Row]) -> list[dict]:
    """Rows as dicts with ``x_floor`` and ``x_native`` (median / median of those rows; None when unknown)."""
    by_name = {row.name: row for row in rows}
    floor, native = by_name["floor"].median_ms, by_name[NATIVE].median_ms
    table = []
    for row in rows:
        entry = asdict(row)
        del entry["times_ms"]
        entry["times_ms"] = [round(t, 2) for t in row.times_ms]
        ok = row.median_ms is not None
        entry["x_floor"] = row.median_ms / floor if ok and floor else None
        entry["x_native"] = row.median_ms / native if ok and native else None
        table.append(entry)
    return table


def describe(args: argparse.Namespace, setup: Setup) -> dict:
    """Header facts: device, versions, shapes, date."""
    device = setup.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": f"{device} ({name}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()})",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, ultralytics "
        f"{ultralytics.__version__}",
        "models": f"student {args.student} <- teacher {args.teacher} (untrained stand-in checkpoint), nc {args.nc}",
        "batch": f"img {tuple(setup.batch['img'].shape)}, {len(setup.batch['cls'])} boxes, AMP {setup.amp}",
        "timing": f"median/p90 of {args.rounds} x {args.steps} steps, each run after {args.warmup} warm-up; "
        "SGD, grad clip 10, no EMA",
        "memory": "CUDA max allocated" if device.type == "cuda" else "peak RSS",
        "note": args.note,
    }


def fmt(value: float | None, spec: str) -> str:
    """Number or n/a."""
    return "n/a" if value is None else format(value, spec)


def render(meta: dict, table: list[dict]) -> str:
    """Markdown: header list, table, notes."""
    lines = ["# yolokd KD step benchmark", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items() if value and key != "memory"]
    lines += [
        f"- peak mem: {meta['memory']} during the row minus usage before the row built its models (MiB)",
        "",
        "| row | median ms | p90 ms | x floor | x ultralytics-native | peak mem MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        cells = [fmt(r["median_ms"], ".1f"), fmt(r["p90_ms"], ".1f"), fmt(r["x_floor"], ".2f")]
        cells += [fmt(r["x_native"], ".2f"), fmt(r["peak_mib"], ".0f")]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    notes = [f"- {r['name']}: {r['note']}" for r in table if r["note"]]
    return "\n".join([*lines, "", *notes, ""]) if notes else "\n".join([*lines, ""])


# --- main -------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="yolov8n.yaml", help="student model YAML (built with random weights)")
    parser.add_argument("--teacher", default="yolov8s.yaml", help="teacher model YAML, saved as a stand-in .pt")
    parser.add_argument("--nc", type=int, default=80, help="number of classes of both models")
    parser.add_argument("--imgsz", type=int, default=320, help="square image size")
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed warm-up steps per row")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the row sequence; times are pooled")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--methods", default="bckd,mimic", help=f"comma-separated yolokd losses ({', '.join(LOSSES)})")
    parser.add_argument("--no-amp", action="store_true", help="disable AMP on CUDA (it is always off on CPU)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0 = torch default); use 1 on a loaded machine"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch and the models")
    parser.add_argument("--note", default="", help="free text for the header, e.g. 'machine under load'")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kd_step.md"), help="Markdown output")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in LOSSES]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(LOSSES)}")
    return args


def run(args: argparse.Namespace, teacher_path: Path) -> tuple[dict, list[dict]]:
    """Measure every row; return (header facts, table rows)."""
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    batch = make_batch(args.batch, args.imgsz, args.nc, device, args.seed)
    student = build_student(args.student, args.nc, args.imgsz, device, args.seed)
    setup = Setup(device, device.type == "cuda" and not args.no_amp, batch, student, teacher_path)
    builders = {
        "student": lambda: student_row(setup),
        "teacher_forward": lambda: teacher_row(setup),
        "floor": lambda: floor_step(setup),
    }
    for method in args.methods:
        builders[f"yolokd_{method}"] = lambda m=method: yolokd_row(setup, m)
    builders[NATIVE] = lambda: native_row(setup)
    return describe(args, setup), add_ratios(measure_rows(builders, setup, args))


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table, write it (Markdown + JSON)."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        teacher_path = save_teacher(
            args.teacher, args.nc, Path(folder) / Path(args.teacher).with_suffix(".pt").name, args.seed + 1
        )
        meta, table = run(args, teacher_path)
    text = render(meta, table)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": table}, indent=2))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
