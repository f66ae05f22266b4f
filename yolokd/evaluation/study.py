"""``yolokd study``: the baseline, each method and Ultralytics' native KD, one schedule, several seeds.

For each seed every row trains the same student with the same arguments (``seed=`` differs between seeds, nothing
else); rows differ only by their distillation: none (baseline), yolokd methods (``bckd``; ``bckd+pkd`` combines
two), or Ultralytics' own ``distill_model=<teacher.pt>`` through its ``DetectionTrainer`` (row
``ultralytics_native``, its default ``dis=6.0``). Each run's ``best.pt`` is validated by
:func:`yolokd.evaluation.validate.validate_model` (Ultralytics mAP + COCO AP). See
:mod:`yolokd.evaluation.stats` for the noise rule and :mod:`yolokd.evaluation.study_report` for the outputs.

Data and teacher: the synthetic set and a teacher trained on it once (the demo's schedule), unless ``data=`` /
``teacher=`` (or a ``cfg=`` experiment) say otherwise. Everything is cached under ``out``: the data, the teacher
(retrained only when its settings change) and each finished run (``study_score.json``, keyed by its exact
arguments and the teacher file), so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from yolokd.config import load_experiment
from yolokd.data import make_synthetic_dataset
from yolokd.demo import CPU_SCHEDULE, EVIDENCE_STUDENT, EVIDENCE_TEACHER
from yolokd.evaluation.validate import validate_model
from yolokd.losses import LOSSES

BASELINE, NATIVE, PLACEBO = "baseline", "ultralytics_native", "placebo"
# The placebo row: a KD run whose KD moves nothing measurable in a step (BCKD at a millionth of the GT loss's
# gradient). It tells what a KD run's mere perturbation does to a chaotic benchmark: on the from-scratch evidence
# benchmark, with runs paired by seed alone (yolokd.engine.seeding), -0.014 ± 0.017, noise (README, "Runs paired by
# their seed alone"). A method's gain over the placebo is what its teacher signal adds, over the baseline what a
# user gets.
PLACEBO_DISTILL = [{"loss": "bckd", "grad_share": 1e-6}]
SCORE_FILE = "study_score.json"
# Part of every run's cache key: runs cached before the augmentation stream was re-seeded per run
# (yolokd.engine.seeding, 2026-12-08) depended on their place in a worker's queue and are trained again.
DATA_STREAM = "python generator re-seeded before the training loader"
# The demo's small-CPU schedule (yolokd.demo.run_demo): AdamW at a fixed lr, 1 warm-up epoch, no mosaic (at 128 px
# it shrinks objects to a few pixels), validation only after the last epoch. Keep the two in step.
DEMO_SCHEDULE: dict[str, Any] = {**CPU_SCHEDULE, "verbose": False}  # the demo's schedule, quiet

# ``preset=evidence``: the benchmark behind the README's Results. Both models start pretrained, as real ones do
# (benchmarks/pretrain_assets.py: 20 epochs on an upstream set, the eight-class "evidence" scenes): the shipped
# YOLOv8s teacher was then fine-tuned 24 epochs on the benchmark's data, the shipped YOLOv8n student is the upstream
# checkpoint and each run fine-tunes it for 12 epochs on the synthetic set's four-class "distinct" scenes at 160 px.
# Students trained from scratch in that schedule differ by 0.05 mAP50-95 from seed to seed, too much for a KD gain
# to be told from luck (that benchmark: student=yolov8n.yaml teacher=yolokd/assets/synthetic_yolov8s_scratch.pt,
# benchmarks/evidence/scratch_students/); pretrained, by 0.003. The full table
# (baseline, the five seed methods, LD and Ultralytics' native KD; 3 seeds) runs in about 90 minutes on the 2-core
# CPU, resumable from its cache. Every value can still be overridden (teacher= with teacher_model= trains one).
PRESETS: dict[str, dict[str, Any]] = {
    "evidence": dict(
        methods="bckd,crosskd,pgd,dfd,gdetkd,ld",
        seeds="0,1,2",
        images=480,
        val_images=150,
        imgsz=160,
        epochs=12,
        batch=16,
        student=str(EVIDENCE_STUDENT),
        teacher=str(EVIDENCE_TEACHER),
        teacher_model="yolov8s.yaml",
        teacher_epochs=24,
        style="distinct",
        native=True,
        device="cpu",
        out="runs/yolokd_evidence",
    ),
}


@dataclass
class StudyRow:
    """One row of the study: its name and distill entries ([] for the baseline); native = Ultralytics' KD."""

    name: str
    distill: list[dict[str, Any]]
    native: bool = False


@dataclass
class RunScore:
    """One trained run: row, seed, its metrics on the validation split and its training time."""

    row: str
    seed: int
    map50_95: float
    map50: float
    coco: dict[str, Any]
    train_seconds: float
    run_dir: str


def parse_list(value: Any, cast: type = str) -> list:
    """``"bckd,mimic"`` / ``["bckd", "mimic"]`` / ``0`` -> a list of `cast` values; None (``methods=``) -> []."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [cast(str(item).strip()) for item in items if str(item).strip()]


def build_rows(
    methods: list[str], cfg_distill: list[dict[str, Any]], native: bool, placebo: bool = False
) -> list[StudyRow]:
    """Baseline, one row per method (a cfg entry of the same loss lends its parameters), then the native row and
    the placebo row (:data:`PLACEBO_DISTILL`) when asked."""
    cfg_params = {entry["loss"]: entry for entry in cfg_distill}
    rows = [StudyRow(BASELINE, [])]
    for method in methods:
        names = method.split("+")
        for name in names:
            if name not in LOSSES:
                close = difflib.get_close_matches(name, list(LOSSES), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"methods: unknown method {name!r}{hint}; valid: {', '.join(LOSSES)}")
        rows.append(StudyRow(method, [dict(cfg_params.get(name, {"loss": name})) for name in names]))
    if native:
        rows.append(StudyRow(NATIVE, [], native=True))
    if placebo:
        rows.append(StudyRow(PLACEBO, [dict(entry) for entry in PLACEBO_DISTILL]))
    if len({row.name for row in rows}) != len(rows):
        raise ValueError(f"methods: each row once, got {methods}")
    return rows


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _file_stamp(path: str | None) -> list | None:
    """A file's path and content hash: a cached run stays valid after a checkout or copy rewrites the file's mtime."""
    if not path or not os.path.exists(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return [os.path.abspath(path), os.path.getsize(path), digest.hexdigest()]


def _score(weights: Path, data: str, imgsz: int, device: str, run_dir: Path) -> dict[str, Any]:
    result = validate_model(
        weights,
        data=data,
        imgsz=imgsz,
        batch=32,
        device=device,
        plots=False,
        verbose=False,
        project=str(run_dir),
        name="study_val",
        exist_ok=True,
    )
    return dict(
        map50_95=result.ultralytics["metrics/mAP50-95(B)"],
        map50=result.ultralytics["metrics/mAP50(B)"],
        coco=result.coco.to_json(),
    )


def train_run(row: StudyRow, args: dict[str, Any], teacher: str | None, schedule: dict | None) -> tuple[Path, float]:
    """Train one row with `args` (Ultralytics train arguments incl. seed, project, name); (run folder, seconds)."""
    start = time.perf_counter()
    if row.native:
        from yolokd.engine.seeding import SeededDetectionTrainer

        trainer = SeededDetectionTrainer(overrides={**args, "distill_model": teacher})
        trainer.train()
        return Path(trainer.save_dir), time.perf_counter() - start
    from yolokd.engine.trainer import train_experiment

    config = {**args, "teacher": teacher, "distill": row.distill} if row.distill else dict(args)
    if row.distill and schedule:
        config["schedule"] = schedule
    run_dir = train_experiment(load_experiment(config))
    return Path(run_dir), time.perf_counter() - start


def _resolved_kd(distill: list[dict[str, Any]]) -> dict[str, Any]:
    """The row's methods and KD balance settings with every default spelled out, so a changed default re-runs it."""
    if not distill:
        return {}
    resolved = load_experiment({"teacher": "teacher.pt", "distill": distill}).to_dict()
    return {"distill": resolved["distill"], "balance": resolved["balance"]}


def run_cached(
    row: StudyRow, seed: int, args: dict[str, Any], teacher: str | None, schedule: dict | None
) -> tuple[RunScore, bool]:
    """Train and score one (row, seed), or read its score back when the same run already finished; (score, cached)."""
    run_dir = Path(args["project"]) / args["name"]
    key = _key(
        {
            "args": args,
            "data_stream": DATA_STREAM,
            "distill": _resolved_kd(row.distill),
            "native": row.native,
            "schedule": schedule,
            "teacher": _file_stamp(teacher) if (row.distill or row.native) else None,
        }
    )
    score_file = run_dir / SCORE_FILE
    if score_file.is_file():
        saved = json.loads(score_file.read_text())
        if saved.get("key") == key:
            return RunScore(**saved["score"]), True
    run_dir, seconds = train_run(row, args, teacher, schedule)
    metrics = _score(run_dir / "weights" / "best.pt", args["data"], args["imgsz"], str(args["device"]), run_dir)
    score = RunScore(row=row.name, seed=seed, train_seconds=seconds, run_dir=str(run_dir), **metrics)
    score_file.write_text(json.dumps({"key": key, "score": asdict(score)}, indent=2) + "\n")
    return score, False


def ensure_teacher(base_args: dict[str, Any], model: str, epochs: int, folder: Path) -> tuple[str, dict[str, Any]]:
    """Train the teacher once (seed 0) and reuse it while its settings and data are unchanged; (best.pt, score)."""
    args = {
        **base_args,
        "model": model,
        "epochs": epochs,
        "seed": 0,
        "close_mosaic": max(epochs // 5, 1),
        "project": str(folder.parent),
        "name": folder.name,
        "exist_ok": True,
    }
    key = _key({"args": args, "data": _file_stamp(str(args["data"]))})
    weights, stamp = folder / "weights" / "best.pt", folder / "study_teacher.json"
    if stamp.is_file() and weights.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("key") == key:
            return str(weights), saved["score"]
    run_dir, seconds = train_run(StudyRow("teacher", []), args, None, None)
    score = _score(run_dir / "weights" / "best.pt", args["data"], args["imgsz"], str(args["device"]), run_dir)
    score["train_seconds"] = seconds
    stamp.write_text(json.dumps({"key": key, "score": score}, indent=2) + "\n")
    return str(run_dir / "weights" / "best.pt"), score


def score_teacher(teacher: str, base_args: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Validate a given teacher checkpoint on the study's split once (cached while the file and data stay)."""
    key = _key(
        {"teacher": _file_stamp(teacher), "data": _file_stamp(str(base_args["data"])), "imgsz": base_args["imgsz"]}
    )
    stamp = folder / "study_teacher.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return json.loads(stamp.read_text())["score"]
    score = _score(Path(teacher), str(base_args["data"]), base_args["imgsz"], str(base_args["device"]), folder)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "score": score}, indent=2) + "\n")
    return score


def run_study(preset: str | None = None, **kwargs: Any):
    """``yolokd study``: `kwargs` as :func:`study`, on top of a named preset's values (``preset=evidence``)."""
    if preset is None:
        return study(**kwargs)
    if preset not in PRESETS:
        close = difflib.get_close_matches(str(preset), list(PRESETS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"preset: unknown preset {preset!r}{hint}; valid: {', '.join(PRESETS)}")
    return study(**{**PRESETS[preset], **kwargs})


def study(
    methods: Any = "bckd",
    seeds: Any = "0,1,2",
    cfg: str | None = None,
    data: str | None = None,
    teacher: str | None = None,
    out: str = "runs/yolokd_study",
    epochs: int | None = None,
    images: int = 400,
    val_images: int = 100,
    imgsz: int | None = None,
    batch: int | None = None,
    student: str | None = None,
    teacher_model: str = "yolov8s.yaml",
    teacher_epochs: int = 16,
    native: bool = True,
    placebo: bool = False,
    device: str | None = None,
    style: str = "hard",
    jobs: int = 1,
):
    """Run every (row, seed) and write ``study.{md,json,png}`` under `out`; returns the StudyReport.

    Without `cfg`: the demo's schedule (12 epochs, 128 px, batch 16, YOLOv8n student, CPU) on the synthetic set
    (`images`/`val_images`) unless `data` is given. With `cfg`: its train arguments, teacher, schedule and method
    parameters. `epochs`, `imgsz`, `batch`, `student`, `device`, `data` and `teacher` override both. The teacher is
    trained (`teacher_model`, `teacher_epochs`, cached) when neither `teacher` nor the cfg names one. `style` is the
    synthetic scenes' style (:data:`yolokd.data.synthetic.STYLES`). `placebo` adds the placebo row
    (:data:`PLACEBO_DISTILL`). `jobs` runs that many (row, seed) runs at a
    time, each in its own process (:func:`run_all`).
    """
    from yolokd.evaluation.study_report import StudyReport, write_report

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected an integer >= 1, got {jobs!r}")
    start = time.perf_counter()
    root = Path(out).resolve()
    seed_list, method_list = parse_list(seeds, int), parse_list(methods)
    experiment = load_experiment(cfg) if cfg else None
    explicit = dict(epochs=epochs, imgsz=imgsz, batch=batch, model=student, device=device, data=data)
    base = base_train_args(experiment, explicit, root / "data", images, val_images, style)
    cfg_dict = experiment.to_dict() if experiment else {}
    cfg_distill = cfg_dict.get("distill", [])
    cfg_methods = (
        ["+".join(entry["loss"] for entry in cfg_distill)] if cfg_distill else []
    )  # the cfg's methods: one row
    rows = build_rows(method_list or cfg_methods, cfg_distill, native, placebo)
    teacher = teacher or (experiment.teacher if experiment else None)
    teacher_score = None
    if teacher is None and len(rows) > 1:
        teacher, teacher_score = ensure_teacher(base, teacher_model, teacher_epochs, root / "teacher")
    elif teacher is not None:
        teacher_score = score_teacher(teacher, base, root / "teacher_val")
    runs = [(row, seed, run_args(base, root, row, seed)) for seed in seed_list for row in rows]
    results = run_all(runs, teacher, cfg_dict.get("schedule"), jobs)
    scores, cached = [score for score, _ in results], sum(was_cached for _, was_cached in results)
    settings = {"rows": [row.name for row in rows], "seeds": seed_list, "teacher": teacher, "cfg": cfg,
                "cached_runs": cached, "train_args": base, "out": str(root), "environment": environment()}  # fmt: skip
    report = StudyReport(scores, settings, teacher_score, time.perf_counter() - start)
    write_report(report, root)
    return report


def run_args(base: dict[str, Any], root: Path, row: StudyRow, seed: int) -> dict[str, Any]:
    """One run's train arguments: the shared ones, its seed and its folder (the cache slot, never renamed)."""
    return {**base, "seed": seed, "project": str(root / "runs" / f"seed{seed}"), "name": row.name, "exist_ok": True}


def run_all(
    runs: list[tuple[StudyRow, int, dict[str, Any]]], teacher: str | None, schedule: dict | None, jobs: int
) -> list[tuple[RunScore, bool]]:
    """:func:`run_cached` for every (row, seed, args), in order; with ``jobs > 1`` that many at a time.

    Parallel runs are separate processes (spawned: nothing of this one's torch state is shared). Each trains as it
    would alone: its own seed, arguments and data, and the torch threads Ultralytics sets for CPU training in every
    process (``NUM_THREADS``: the cores less one, at most 8), so ``jobs`` changes the wall clock, not a result. On
    the CPU, jobs x NUM_THREADS above the core count only shares the cores.
    """
    if jobs == 1 or len(runs) < 2:
        return [run_cached(row, seed, args, teacher, schedule) for row, seed, args in runs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_cached, row, seed, args, teacher, schedule) for row, seed, args in runs]
        return [future.result() for future in futures]


def environment() -> dict[str, str]:
    """What the study's numbers depend on besides its settings: library builds and the processor."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import ultralytics
    from ultralytics.utils.torch_utils import get_cpu_info

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        # the image pipeline's libraries: the augmentation stream draws through them (a shift of seed 1 first put
        # down to an install was the process's first-run draw, yolokd.engine.seeding)
        **{name: installed(name) for name in ("numpy", "opencv-python-headless", "albumentations", "pillow")},
        "torch threads": str(torch.get_num_threads()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        # a seed's run reproduces on the same kind of processor only (README, Results: the evidence baseline's seed
        # 0 gave 0.6600 on one 2-core VM and 0.6455 on another, same data, libraries and arguments)
        "cpu": f"{get_cpu_info()}, torch kernels {torch.backends.cpu.get_cpu_capability()}",
    }


def base_train_args(
    experiment: Any, explicit: dict[str, Any], data_root: Path, images: int, val_images: int, style: str = "hard"
) -> dict[str, Any]:
    """Train arguments every run shares: the cfg's (or the demo schedule), the explicit overrides, the data."""
    if experiment is not None:
        base = dict(experiment.train_args)
    else:
        base = {**DEMO_SCHEDULE, "model": "yolov8n.yaml", "epochs": 12, "imgsz": 128, "batch": 16, "device": "cpu"}
    base.update({key: value for key, value in explicit.items() if value is not None})
    base.setdefault("imgsz", 640)
    base.setdefault("device", "")
    if not base.get("data"):
        synthetic = make_synthetic_dataset(
            data_root, num_train=images, num_val=val_images, imgsz=base["imgsz"], seed=0, style=style
        )
        base["data"] = str(synthetic)
    return base
