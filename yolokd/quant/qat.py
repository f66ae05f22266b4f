"""``yolokd qat CFG.yaml model=best.pt``: distillation-aware quantization-aware training (KD-QAT).

The run is the experiment's own KD run (same trainer, criterion, teacher, methods, balance, checkpoints), started
from a trained float student with Ultralytics' ``quantize=8``: its trainer inserts ModelOpt's INT8 fake-quant into
the student (``prepare_qat``, ranges calibrated on 8 training batches, then fixed), and every step trains the
fake-quant student on its GT loss plus the experiment's KD terms against the float teacher. Its checkpoints carry
the quantization state (``modelopt``), load with ``ultralytics.YOLO`` and export a Q/DQ ONNX with
``yolokd export model=.../best.pt format=onnx``; ``yolokd train resume=.../last.pt`` continues it.

What differs from the experiment's float training is a fine-tuning schedule (``QAT_SCHEDULE``, below), applied over
the config; any key=value on the command line wins over it. The trained student has nothing left to warm up, and
the KD terms are what keeps the quantized student near the float teacher, so KD is on at full weight throughout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yolokd.quant.backend import checkpoint_is_qat

QAT_SCHEDULE: dict[str, Any] = dict(
    quantize=8,  # Ultralytics' trainer runs INT8 QAT (ModelOpt fake-quant) for quantize=8
    epochs=3,  # fine-tuning: NVIDIA's QAT guidance is ~10% of the float schedule, a few epochs here
    optimizer="AdamW",  # explicit: Ultralytics' "auto" ignores lr0
    lr0=1e-4,  # ~5% of the float runs' AdamW lr (0.002): adapt the weights to INT8, do not relearn them
    warmup_epochs=0,  # a warm-up's bias lr of 0.1 would undo the trained student
    mosaic=0.0,  # the float schedule ends with mosaic closed; QAT continues from there
    close_mosaic=0,
)
"""Ultralytics train arguments of a QAT run, over the experiment config's (command-line key=value win)."""
QAT_KD_SCHEDULE: dict[str, Any] = {"schedule.warmup_epochs": 0, "schedule.off_last_epochs": 0}
"""KD at full weight from the first step to the last."""
HEAD_TRANSFER = "init_head_from_teacher"
"""A method parameter that copies teacher head tensors into the student on fresh runs (G-DetKD): off for QAT, which
would overwrite the trained student's head."""


def qat_experiment(source: str | Path | Mapping[str, Any], overrides: Mapping[str, Any]):
    """The experiment of a QAT run: the config at `source`, ``QAT_SCHEDULE`` over it, then `overrides` (which win).

    Args:
        source: experiment YAML (path or shipped name) or dict, as ``load_experiment`` takes.
        overrides: command-line ``key=value`` (dotted paths); ``model=`` the trained float student (.pt) is required.

    Raises:
        ValueError: a missing or non-checkpoint ``model``, or a checkpoint that is already quantization-aware
            trained (continue that run with ``yolokd train resume=``); config errors as ``load_experiment`` raises.
    """
    from yolokd.config import load_experiment

    model = overrides.get("model")
    check_qat_student(model)
    recipe: dict[str, Any] = {**QAT_SCHEDULE, **QAT_KD_SCHEDULE}
    experiment = load_experiment(source, {**recipe, **overrides})
    recipe["name"] = f"{experiment.train_args.get('name') or 'train'}_qat"
    for index, entry in enumerate(experiment.distill):
        if getattr(entry.params, HEAD_TRANSFER, False):
            recipe[f"distill.{index}.{HEAD_TRANSFER}"] = False
    return load_experiment(source, {**recipe, **overrides})


def check_qat_student(model: Any) -> None:
    """Raise a one-line ValueError unless `model` is an existing float Ultralytics checkpoint (.pt)."""
    if not model:
        raise ValueError(
            "model: 'qat' fine-tunes a trained student; give its checkpoint, e.g. "
            "model=runs/detect/train/weights/best.pt"
        )
    path = Path(str(model))
    if path.suffix != ".pt":
        raise ValueError(f"model: QAT fine-tunes trained weights; {model} is not a checkpoint (.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"model: {model} does not exist")
    if checkpoint_is_qat(path):
        raise ValueError(
            f"model: {model} is already quantization-aware trained; continue its run with "
            f"'yolokd train resume=<its last.pt>', or start QAT from the float checkpoint it came from"
        )
