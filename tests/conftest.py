"""Shared fixtures: a tiny synthetic dataset and teacher checkpoints built from model YAMLs (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("YOLO_OFFLINE", "1")  # never try to reach a hub during tests


def save_untrained_checkpoint(model_yaml: str, names: dict[int, str], path: Path, seed: int = 0) -> Path:
    """Write an Ultralytics-format checkpoint of a YAML-built model: a stand-in teacher for tests (no downloads)."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(model_yaml, nc=len(names), verbose=False)
    model.names = dict(names)
    torch.save({"model": model.half(), "train_args": {}}, path)
    return path


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """data.yaml of a 16-train / 8-val synthetic set at 64 px."""
    from yolokd.data import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=16, num_val=8, imgsz=64, seed=0)


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
