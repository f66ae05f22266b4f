"""KD state saved beside the student checkpoint, for ``resume`` only.

``best.pt``/``last.pt`` stay plain Ultralytics checkpoints of the student (``ultralytics.YOLO`` loads them with
or without yolokd installed). Everything distillation adds - the experiment (teacher path, methods, schedule),
the loss modules' weights and buffers, and the KD optimiser state - goes to ``weights/kd_state.pt``, written
right after ``last.pt`` with the same epoch, atomically (temp file + rename), as plain tensors and dicts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from yolokd import __version__

KD_STATE_NAME = "kd_state.pt"
KD_STATE_FORMAT = "yolokd.kd_state/1"


def kd_state_path(student_checkpoint: str | Path) -> Path:
    """Where the KD state of a run lives, given its ``last.pt`` (or any file in its ``weights/`` folder)."""
    return Path(student_checkpoint).parent / KD_STATE_NAME


def save_kd_state(
    path: Path,
    *,
    epoch: int,
    experiment: dict[str, Any],
    losses: dict,
    optimizer: dict | None,
    balance: dict[str, Any] | None = None,
) -> None:
    """Write the KD state atomically, so an interruption never leaves a half-written file behind.

    ``balance`` is the run's :class:`~yolokd.engine.balance.BalanceReport` as a dict: the frozen per-method KD
    scales that resume restores bit for bit (Python floats survive ``torch.save`` exactly).
    """
    state = {
        "format": KD_STATE_FORMAT,
        "yolokd": __version__,
        "epoch": epoch,
        "experiment": experiment,
        "losses": losses,
        "optimizer": optimizer,
        "balance": balance,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_kd_state(path: Path) -> dict[str, Any]:
    """Read a KD state file, with errors that say what to do."""
    if not path.is_file():
        raise FileNotFoundError(
            f"no yolokd KD state at '{path}': this run was not trained by yolokd, or the file was removed. "
            "To continue it without distillation use Ultralytics' own 'yolo train resume model=<last.pt>'"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file raises pickle/zip errors of many types
        raise RuntimeError(f"KD state '{path}' could not be read ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or state.get("format") != KD_STATE_FORMAT:
        raise RuntimeError(f"'{path}' is not a yolokd KD state file (expected format {KD_STATE_FORMAT})")
    return state
