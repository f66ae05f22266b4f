"""1-epoch KD runs of segment, pose and OBB students, YOLOv8 and YOLO26 (task trainer picked by the student's task):
every KD term finite and non-zero, and the saved student is a plain Ultralytics model of its task that loads,
validates and exports to ONNX with parity."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from conftest import tiny_train_args
from ultralytics import YOLO
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.nn.tasks import OBBModel, PoseModel, SegmentationModel
from ultralytics.utils import LOGGER

from yolokd.cli import main
from yolokd.config import load_experiment
from yolokd.data.synthetic import KEYPOINT_SHAPE
from yolokd.engine.trainer import (
    DistillationTrainer,
    OBBDistillationTrainer,
    PoseDistillationTrainer,
    SegmentationDistillationTrainer,
    student_task,
    train_experiment,
    trainer_for,
)

pytestmark = pytest.mark.integration

# Per run: the task, student, teacher, methods (every task term plus methods that read boxes/IoUs and head stages; on
# YOLO26, reg_max=1 heads with one2many + one2one branches: one2many methods plus bckd on one2one, "name@branch"), the
# KD terms they log, the model class, Ultralytics' own task loss column and a task metric column.
RUNS = {
    "segment": dict(
        task="segment",
        student="yolov8n-seg.yaml",
        teacher="yolov8s-seg.yaml",
        distill=["bckd", "maskkd", "crosskd"],
        terms=["bckd_cls", "bckd_loc", "maskkd_mask", "crosskd_cls", "crosskd_loc"],
        model_class=SegmentationModel,
        gt_column="seg_loss",
        metric="metrics/mAP50-95(M)",
    ),
    "pose": dict(
        task="pose",
        student="yolov8n-pose.yaml",
        teacher="yolov8s-pose.yaml",
        distill=["bckd", "kptkd", "ld"],
        terms=["bckd_cls", "bckd_loc", "kptkd_loc", "kptkd_vis", "ld_loc"],
        model_class=PoseModel,
        gt_column="pose_loss",
        metric="metrics/mAP50-95(P)",
    ),
    "obb": dict(
        task="obb",
        student="yolov8n-obb.yaml",
        teacher="yolov8s-obb.yaml",
        distill=["bckd", "anglekd", "pgd"],
        terms=["bckd_cls", "bckd_loc", "anglekd_angle", "pgd_cls_fg", "pgd_cls_bg", "pgd_box", "pgd_att"],
        model_class=OBBModel,
        gt_column="angle_loss",
        metric="metrics/mAP50-95(B)",
    ),
    "segment26": dict(
        task="segment",
        student="yolo26n-seg.yaml",
        teacher="yolo26s-seg.yaml",
        distill=["maskkd", "crosskd", "bckd@one2one"],
        terms=["maskkd_mask", "crosskd_cls", "crosskd_loc", "bckd_cls_o2o", "bckd_loc_o2o"],
        model_class=SegmentationModel,
        gt_column="sem_loss",
        metric="metrics/mAP50-95(M)",
    ),
    "pose26": dict(
        task="pose",
        student="yolo26n-pose.yaml",
        teacher="yolo26s-pose.yaml",
        distill=["kptkd", "bckd", "kptkd@one2one"],
        terms=["kptkd_loc", "kptkd_vis", "bckd_cls", "bckd_loc", "kptkd_loc_o2o", "kptkd_vis_o2o"],
        model_class=PoseModel,
        gt_column="rle_loss",
        metric="metrics/mAP50-95(P)",
    ),
    "obb26": dict(
        task="obb",
        student="yolo26n-obb.yaml",
        teacher="yolo26s-obb.yaml",
        distill=["anglekd", "crosskd", "bckd@one2one"],
        terms=["anglekd_angle", "crosskd_cls", "crosskd_loc", "bckd_cls_o2o", "bckd_loc_o2o"],
        model_class=OBBModel,
        gt_column="angle_loss",
        metric="metrics/mAP50-95(B)",
    ),
}


def distill_entries(methods: list[str]) -> list[dict]:
    """``["bckd", "bckd@one2one"]`` -> ``[{"loss": "bckd"}, {"loss": "bckd", "branch": "one2one"}]``."""
    entries = []
    for method in methods:
        name, _, branch = method.partition("@")
        entries.append({"loss": name, **({"branch": branch} if branch else {})})
    return entries


def read_row(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "results.csv") as f:
        (row,) = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return row


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    """Factory: the synthetic set (same images as ``synthetic_data``) with the labels of a task."""
    from yolokd.data import make_synthetic_dataset

    root = tmp_path_factory.mktemp("task_data")
    return lambda task: make_synthetic_dataset(root / task, num_train=16, num_val=8, imgsz=64, seed=0, task=task)


@pytest.fixture(scope="module", params=list(RUNS))
def task_run(request, task_data, calibrated_teacher, tmp_path_factory) -> tuple[str, Path, Path]:
    """(run name, data.yaml, run folder) of a 1-epoch run of the run's student from a calibrated teacher."""
    spec = RUNS[request.param]
    data = task_data(spec["task"])
    experiment = load_experiment(
        {
            **tiny_train_args(data, tmp_path_factory.mktemp(request.param), "run", model=spec["student"]),
            "teacher": str(calibrated_teacher(spec["teacher"])),
            "distill": distill_entries(spec["distill"]),
        }
    )
    return request.param, data, train_experiment(experiment)


def test_run_logs_the_task_loss_and_every_kd_term(task_run):
    """Ultralytics' task loss and metric columns, and every KD term finite and > 0 in train and val."""
    name, _, run_dir = task_run
    row, spec = read_row(run_dir), RUNS[name]
    task = spec["task"]
    assert row[f"train/{spec['gt_column']}"] > 0 and spec["metric"] in row
    assert yaml.safe_load((run_dir / "args.yaml").read_text())["task"] == task
    for term in spec["terms"]:
        for split in ("train", "val"):
            value = row[f"{split}/{term}"]
            assert math.isfinite(value) and value > 0, f"{split}/{term}"


def test_student_is_a_plain_ultralytics_model_of_its_task(task_run, synthetic_names):
    """best.pt holds the task's model class with a fresh one's state keys and no KD residue; YOLO validates it as a
    model of that task over the val split's GT."""
    name, data, run_dir = task_run
    spec = RUNS[name]
    task = spec["task"]
    best = run_dir / "weights" / "best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    model = ckpt.get("ema") or ckpt["model"]
    assert type(model) is spec["model_class"] and not {"distill", "teacher", "kd_state"} & set(ckpt)
    extra = {"data_kpt_shape": KEYPOINT_SHAPE} if task == "pose" else {}
    fresh = spec["model_class"](spec["student"], nc=len(synthetic_names), verbose=False, **extra)
    assert set(model.state_dict()) == set(fresh.state_dict()) and getattr(model, "criterion", None) is None
    yolo = YOLO(str(best))
    assert yolo.task == task
    metrics = yolo.val(data=str(data), imgsz=64, batch=8, device="cpu", plots=False, verbose=False)
    assert metrics.names == synthetic_names and int(metrics.nt_per_class.sum()) > 0


def test_student_exports_to_onnx_with_parity(task_run):
    """Ultralytics' ONNX export of best.pt: ONNX Runtime's outputs (decoded boxes, scores and the task's extras:
    mask coefficients + prototypes, angles) match PyTorch's."""
    _, _, run_dir = task_run
    best = run_dir / "weights" / "best.pt"
    onnx_path = Path(YOLO(str(best)).export(format="onnx", imgsz=64, device="cpu", simplify=False))
    model = YOLO(str(best)).model.float().eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        outputs, _ = model(image)
    expected = list(outputs) if isinstance(outputs, tuple) else [outputs]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    assert len(got) == len(expected)
    for mine, reference in zip(got, expected, strict=True):
        np.testing.assert_allclose(mine, reference.numpy(), atol=1e-3, rtol=1e-3)


def test_train_picks_the_trainer_by_the_students_task(task_run):
    """The student's task picks the trainer: a YAML by its head, a checkpoint by its model."""
    name, _, run_dir = task_run
    task = RUNS[name]["task"]
    assert student_task(RUNS[name]["student"]) == task and student_task(run_dir / "weights" / "last.pt") == task
    assert student_task("yolov8n.yaml") == "detect"
    pairs = {
        "detect": (DistillationTrainer, DetectionTrainer),
        "segment": (SegmentationDistillationTrainer, SegmentationTrainer),
        "pose": (PoseDistillationTrainer, PoseTrainer),
        "obb": (OBBDistillationTrainer, OBBTrainer),
    }
    for task_name, (ours, theirs) in pairs.items():
        assert trainer_for(task_name) is ours and issubclass(ours, theirs)
    with pytest.raises(ValueError, match="cannot distil classify students"):
        trainer_for("classify")


@pytest.mark.parametrize(
    ("student", "teacher"),
    [
        ("yolov8n-seg.yaml", "yolov8s.yaml"),
        ("yolov8n-obb.yaml", "yolov8s-seg.yaml"),
        ("yolov8n-pose.yaml", "yolov8s-obb.yaml"),
    ],
)
def test_a_teacher_of_another_task_is_refused(student, teacher, task_data, calibrated_teacher, tmp_path):
    """A teacher of another task stops the run when it is built, in one line naming both tasks."""
    task = student_task(student)
    experiment = load_experiment(
        {
            **tiny_train_args(task_data(task), tmp_path, "run", model=student),
            "teacher": str(calibrated_teacher(teacher)),
            "distill": [{"loss": "bckd"}],
        }
    )
    with pytest.raises(ValueError, match=rf"teacher is a {student_task(teacher)} model .* student is a {task} model"):
        train_experiment(experiment)


def test_yolokd_val_and_checked_export_work_on_task_models(task_run, capsys):
    """'yolokd val' validates a task model with its task's metrics (no COCO box metrics, which are detect-only), and
    'yolokd export' with data runs its checks (graph with the task's outputs, parity of the detections and for segment
    models of the prototypes and masks, box and task mAP deltas, plain-graph comparison), all passing."""
    name, data, run_dir = task_run
    spec = RUNS[name]
    best = run_dir / "weights" / "best.pt"
    project = run_dir / "cli"
    assert (
        main(["val", f"model={best}", f"data={data}", "imgsz=64", "batch=8", "plots=false", f"project={project}"]) == 0
    )
    out = capsys.readouterr().out
    assert spec["metric"] in out and "COCO" not in out
    assert main(["export", f"model={best}", "format=onnx", "imgsz=64", f"data={data}"]) == 0
    report = json.loads(best.with_suffix(".export.json").read_text())
    assert report["passed"] and report["problems"] == []
    graph, parity = report["checks"]["graph"], report["checks"]["parity"]
    assert [name for name, _ in graph["outputs"]] == (
        ["output0", "output1"] if spec["task"] == "segment" else ["output0"]
    )
    assert parity["detections"]["match_iou"] == 0.5 and "delta" in report["checks"]["map"]
    task_map = spec["metric"].replace("metrics/mAP50-95", "metrics/mAP50")  # the task's own mAP is compared too
    assert spec["metric"] in report["checks"]["map"]["delta"] and task_map in report["checks"]["map"]["delta"]
    if spec["task"] == "segment":  # both outputs: the prototypes elementwise, the masks of matched detections
        assert parity["prototypes"]["shape"][1:] == [32, 16, 16] and parity["prototypes"]["relative_max_diff"] < 1e-3
        assert "masks" in parity and any("output1" in item for item in parity["compared"])
    else:
        assert "prototypes" not in parity
    assert report["checks"]["plain"]["same_graph"]


def test_a_segment_run_resumes_with_the_segmentation_trainer(task_data, calibrated_teacher, tmp_path, monkeypatch):
    """Stopped after epoch 1 of 2, 'train resume=last.pt' picks the segment trainer from the checkpoint and finishes
    epoch 2 with its KD terms, also from another folder than the one the run started in with relative data and
    teacher paths (the run saves them absolute)."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere" / "deeper"  # where no relative path of start works
    start.mkdir(), elsewhere.mkdir(parents=True)
    monkeypatch.chdir(start)
    data = Path(os.path.relpath(task_data("segment"), start))
    teacher = os.path.relpath(calibrated_teacher("yolov8s-seg.yaml"), start)
    experiment = load_experiment(
        {
            **tiny_train_args(data, tmp_path, "run", model="yolov8n-seg.yaml", epochs=2),
            "teacher": teacher,
            "distill": [{"loss": "bckd"}, {"loss": "maskkd"}],
        }
    )
    first = SegmentationDistillationTrainer(experiment, overrides=experiment.train_args)

    def interrupt(_trainer):
        raise KeyboardInterrupt("simulated interruption after the epoch-1 checkpoint")

    first.add_callback("on_model_save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    monkeypatch.chdir(elsewhere)
    run_dir = train_experiment(None, resume=str(first.last))
    with open(run_dir / "results.csv") as f:
        rows = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert [row["epoch"] for row in rows] == [1.0, 2.0]
    assert rows[1]["train/maskkd_mask"] > 0 and rows[1]["train/seg_loss"] > 0


# The shipped task configs, as a user runs them: by name from a folder that has no cfg/, with the synthetic data of
# the config's task and a teacher of that task (here built from the config's teacher architecture).
SHIPPED_TASK_CONFIGS = {
    "bckd_yolov8n-seg.yaml": ("segment", "yolov8s-seg.yaml", ["bckd_cls", "bckd_loc", "maskkd_mask"]),
    "bckd_yolov8n-pose.yaml": ("pose", "yolov8s-pose.yaml", ["bckd_cls", "bckd_loc", "kptkd_loc", "kptkd_vis"]),
    "bckd_yolov8n-obb.yaml": ("obb", "yolov8s-obb.yaml", ["bckd_cls", "bckd_loc", "anglekd_angle"]),
    "bckd_yolo26n-seg.yaml": ("segment", "yolo26s-seg.yaml", ["bckd_cls", "bckd_loc", "maskkd_mask"]),
    "bckd_yolo26n-pose.yaml": ("pose", "yolo26s-pose.yaml", ["bckd_cls", "bckd_loc", "kptkd_loc", "kptkd_vis"]),
    "bckd_yolo26n-obb.yaml": ("obb", "yolo26s-obb.yaml", ["bckd_cls", "bckd_loc", "anglekd_angle"]),
}


class LogLines(logging.Handler):
    """Collects the messages of Ultralytics' logger (which writes to the stream it was given at import)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("config", list(SHIPPED_TASK_CONFIGS))
def test_shipped_task_config_trains_by_name_from_any_folder(
    config, task_data, calibrated_teacher, tmp_path, monkeypatch, capfd
):
    """'yolokd train <config>' from an empty folder, 1 epoch at 64 px: the task's trainer runs, the KD balance table is
    printed and written, every KD term of the config is in results.csv (train and val, finite, > 0), and best.pt is
    a plain Ultralytics model of the task."""
    task, teacher_yaml, terms = SHIPPED_TASK_CONFIGS[config]
    data, teacher = task_data(task), calibrated_teacher(teacher_yaml)
    monkeypatch.chdir(tmp_path)
    overrides = {**tiny_train_args(data, tmp_path / "runs", "run"), "teacher": str(teacher)}
    overrides.pop("verbose")
    logged = LogLines()
    LOGGER.addHandler(logged)
    try:
        assert main(["train", config, *(f"{key}={value}" for key, value in overrides.items())]) == 0
    finally:
        LOGGER.removeHandler(logged)
    run_dir = tmp_path / "runs" / "run"
    assert f"run saved to {run_dir}" in capfd.readouterr().out
    log = "\n".join(logged.lines)
    assert "| method | terms |" in log and f"({task} model, " in log  # the balance table, the teacher's task
    assert "| method | terms |" in (run_dir / "kd_balance.md").read_text()
    row = read_row(run_dir)
    for term in terms:
        for split in ("train", "val"):
            assert math.isfinite(row[f"{split}/{term}"]) and row[f"{split}/{term}"] > 0, f"{split}/{term}"
    assert YOLO(str(run_dir / "weights" / "best.pt")).task == task
