"""The dense-head paper configs as a user runs them: ``yolokd train cfg/crosskd_gfl_r18.yaml`` (and the FCOS and
RetinaNet ones) from a folder without cfg/, with the config's own ResNet student and a teacher of the config's
ResNet-50 architecture, then ``yolokd export format=onnx`` on the student, checked in onnxruntime."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_args

from yolokd.cli import main

pytestmark = pytest.mark.integration

# config -> (the teacher architecture its comment names, the KD terms it must log, the student's head class)
PAPER_CONFIGS = {
    "crosskd_gfl_r18.yaml": ("gfl-r50.yaml", ["crosskd_cls", "crosskd_loc"], "yolokd.models.gfl.GFLDetect"),
    "pgd_fcos_r18.yaml": (
        "fcos-r50.yaml",
        ["pgd_cls_fg", "pgd_cls_bg", "pgd_box", "pgd_att"],
        "yolokd.models.fcos.FCOSDetect",
    ),
    "bckd_retinanet_r18.yaml": (
        "retinanet-r50.yaml",
        ["bckd_cls", "bckd_loc"],
        "yolokd.models.retinanet.RetinaNetDetect",
    ),
}


def _row(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "results.csv") as f:
        (row,) = [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return row


@pytest.mark.parametrize("config", list(PAPER_CONFIGS))
def test_paper_config_distils_a_resnet_student_and_exports_it(
    config, synthetic_data, calibrated_teacher, tmp_path, monkeypatch
):
    """1 epoch at 64 px with the config's method and settings (only data, teacher and size overridden): every KD term
    of the config is in results.csv (train and val, finite, > 0), best.pt names the head class it needs, and its ONNX
    export passes yolokd's checks (graph, onnxruntime parity, mAP)."""
    teacher_yaml, terms, head_class = PAPER_CONFIGS[config]
    teacher = calibrated_teacher(teacher_yaml)
    monkeypatch.chdir(tmp_path)
    overrides = {**tiny_train_args(synthetic_data, tmp_path / "runs", "run"), "teacher": str(teacher)}
    overrides.pop("verbose")
    assert main(["train", config, *(f"{key}={value}" for key, value in overrides.items())]) == 0
    run_dir = tmp_path / "runs" / "run"
    row = _row(run_dir)
    for term in terms:
        for split in ("train", "val"):
            value = row[f"{split}/{term}"]
            assert math.isfinite(value) and value > 0, f"{split}/{term}={value}"
    best = run_dir / "weights" / "best.pt"
    assert head_class in set(torch.serialization.get_unsafe_globals_in_checkpoint(best))
    assert main(["export", f"model={best}", "format=onnx", "imgsz=64", f"data={synthetic_data}"]) == 0
    report = json.loads(best.with_suffix(".export.json").read_text())
    assert report["passed"] and report["problems"] == [], report["problems"]
    assert "delta" in report["checks"]["map"]
