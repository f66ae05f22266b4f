"""The teacher's dtype under AMP: fp16 for amp=True, bf16 for amp=bf16 (it was fp16 fed bf16 activations), fp32 off
CUDA or without AMP; a teacher stored in the other reduced dtype follows the active autocast dtype."""

from __future__ import annotations

import pytest
import torch
from ultralytics.nn.tasks import DetectionModel

from yolokd.config import LossEntry
from yolokd.engine.distiller import Distiller, amp_teacher_dtype, teacher_dtype_for
from yolokd.losses.bckd import BCKDParams


@pytest.mark.parametrize(
    ("amp", "device_type", "expected"),
    [
        (True, "cuda", torch.float16),
        ("fp16", "cuda", torch.float16),
        ("bf16", "cuda", torch.bfloat16),
        (False, "cuda", None),
        ("fp32", "cuda", None),
        ("bf16", "cpu", None),
        (True, "mps", None),
    ],
)
def test_amp_teacher_dtype(amp, device_type, expected):
    """The stored teacher dtype is the run's autocast dtype on CUDA, none (fp32) otherwise."""
    assert amp_teacher_dtype(amp, device_type) == expected


@pytest.mark.parametrize(
    ("stored", "autocast", "expected"),
    [
        (torch.float16, torch.bfloat16, torch.bfloat16),
        (torch.bfloat16, torch.float16, torch.float16),
        (torch.float16, None, torch.float16),
        (torch.float32, torch.bfloat16, torch.float32),
    ],
)
def test_teacher_runs_in_the_autocast_dtype(stored, autocast, expected):
    """A reduced-precision teacher follows autocast's dtype; an fp32 teacher is left to autocast; no autocast: as is."""
    assert teacher_dtype_for(stored, autocast) == expected


def test_fp16_teacher_under_bf16_autocast_runs_in_bf16():
    """A teacher stored in fp16 (the trainer's AMP default) meets bf16 autocast: it is moved to bf16 and its views
    are finite (CPU autocast stands in for CUDA's)."""
    torch.manual_seed(0)
    teacher = DetectionModel("yolov8n.yaml", nc=3, verbose=False).eval().requires_grad_(False)
    student = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    distiller = Distiller(teacher, student, [LossEntry("bckd", BCKDParams())], torch.device("cpu"))
    distiller.use_half_teacher()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views = distiller.teacher_views(torch.rand(1, 3, 64, 64))
    assert next(teacher.parameters()).dtype == torch.bfloat16
    assert all(torch.isfinite(view.cls_logits.float()).all() for view in views.values())


def test_use_half_teacher_refuses_fp32():
    """Only fp16 / bf16 are reduced dtypes for the teacher."""
    distiller = Distiller.__new__(Distiller)
    with pytest.raises(ValueError, match="teacher dtype"):
        distiller.use_half_teacher(torch.float32)
