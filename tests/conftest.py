"""Shared fixtures: a tiny synthetic dataset and teacher checkpoints built from model YAMLs (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("YOLO_OFFLINE", "1")  # never try to reach a hub during tests


def save_untrained_checkpoint(
    model_yaml: str, names: dict[int, str], path: Path, seed: int = 0, calibration_images: torch.Tensor | None = None
) -> Path:
    """Write an Ultralytics-format checkpoint of a YAML-built model: a stand-in teacher for tests (no downloads).

    With ``calibration_images`` (B, 3, H, W) in [0, 1], the BatchNorm statistics are measured on them (one cumulative
    pass in train mode, no weight update). An untrained model in eval mode otherwise keeps BatchNorm's initial
    statistics, under which activations shrink layer by layer: its head outputs are near-constant and its neck
    features ~1e-6, so KD terms would only measure the student.
    """
    from ultralytics.nn.tasks import (
        DetectionModel,
        OBBModel,
        PoseModel,
        SegmentationModel,
        guess_model_task,
        yaml_model_load,
    )

    from yolokd.data.synthetic import KEYPOINT_SHAPE
    from yolokd.models import DenseDetectionModel, dense_head_name, resolve_model_yaml

    task = guess_model_task(yaml_model_load(resolve_model_yaml(model_yaml)))
    model_class = {"detect": DetectionModel, "segment": SegmentationModel, "pose": PoseModel, "obb": OBBModel}[task]
    if dense_head_name(model_yaml):  # a yolokd dense head (gfl-yolov8s.yaml)
        model_class = DenseDetectionModel
    extra = {"data_kpt_shape": KEYPOINT_SHAPE} if task == "pose" else {}  # the synthetic set's 4 keypoints
    torch.manual_seed(seed)
    model = model_class(model_yaml, nc=len(names), verbose=False, **extra)
    model.names = dict(names)
    if calibration_images is not None:
        batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for bn in batch_norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the pass
        with torch.no_grad():
            model.train()(calibration_images)
        for bn in batch_norms:
            bn.momentum = 0.03
    torch.save({"model": model.eval().half(), "train_args": {}}, path)
    return path


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """data.yaml of a 16-train / 8-val synthetic set at 64 px."""
    from yolokd.data import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=16, num_val=8, imgsz=64, seed=0)


@pytest.fixture(scope="session")
def distinct_data(tmp_path_factory) -> Path:
    """data.yaml of a 16-train / 8-val set of the "distinct" scenes at 96 px: the demo's teacher
    (``yolokd/assets/synthetic_yolov8s_scratch.pt``) detects them (mAP50-95 ~0.3), so INT8 tests compare real
    detections."""
    from yolokd.data import make_synthetic_dataset

    root = tmp_path_factory.mktemp("distinct")
    return make_synthetic_dataset(root, num_train=16, num_val=8, imgsz=96, seed=0, style="distinct")


@pytest.fixture(scope="session")
def synthetic_names(synthetic_data) -> dict[int, str]:
    """Class names of the synthetic set."""
    return yaml.safe_load(synthetic_data.read_text())["names"]


@pytest.fixture(scope="session")
def teacher_checkpoint(tmp_path_factory, synthetic_names):
    """Factory: teacher_checkpoint('yolov8s.yaml') -> path of a stand-in teacher for the synthetic classes."""
    folder = tmp_path_factory.mktemp("teachers")

    def make(model_yaml: str) -> Path:
        path = folder / model_yaml.replace(".yaml", ".pt")
        return path if path.exists() else save_untrained_checkpoint(model_yaml, synthetic_names, path)

    return make


@pytest.fixture(scope="session")
def calibrated_teacher(tmp_path_factory, synthetic_data, synthetic_names):
    """Factory: calibrated_teacher('yolov8s.yaml') -> a stand-in teacher with BatchNorm statistics measured on the
    synthetic train images, so its features and head outputs have a trained model's spread."""
    root = Path(yaml.safe_load(synthetic_data.read_text())["path"])
    images = [cv2.imread(str(p))[:, :, ::-1] for p in sorted((root / "images" / "train").glob("*.png"))]
    batch = torch.from_numpy(np.stack(images).astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
    folder = tmp_path_factory.mktemp("calibrated_teachers")

    def make(model_yaml: str) -> Path:
        path = folder / model_yaml.replace(".yaml", ".pt")
        return (
            path
            if path.exists()
            else save_untrained_checkpoint(model_yaml, synthetic_names, path, calibration_images=batch)
        )

    return make


def tiny_train_args(data: Path, project: Path, name: str, **extra) -> dict:
    """Ultralytics train arguments for a seconds-long CPU epoch."""
    args = dict(
        data=str(data),
        epochs=1,
        imgsz=64,
        batch=8,
        workers=0,
        device="cpu",
        seed=0,
        deterministic=False,
        plots=False,
        amp=False,
        project=str(project),
        name=name,
        exist_ok=True,
        close_mosaic=0,
        verbose=False,
        warmup_epochs=0,
        nbs=8,  # nbs = batch: an optimiser step every batch
    )
    args.update(extra)
    return args
