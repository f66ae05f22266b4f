"""The teacher and the configured distillation losses: everything a run adds to plain Ultralytics training."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils import LOGGER
from ultralytics.utils.downloads import attempt_download_asset

from yolokd.config import LossEntry
from yolokd.heads import HeadAdapter, StageRecorder, adapter_for, check_head_pair
from yolokd.losses import LOSSES
from yolokd.views import Targets, View


def load_teacher(path: str | Path, device: torch.device) -> nn.Module:
    """Load a trained Ultralytics checkpoint as a frozen teacher (eval mode, no grad), with errors that name the fix."""
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"teacher must be a trained checkpoint (.pt), got '{path}': a model YAML has random weights")
    if not path.is_file() and path.parent == Path("."):  # a bare release name such as yolov8s.pt: as in Ultralytics,
        try:  # look in the weights folder, then fetch the official release asset
            path = Path(attempt_download_asset(str(path)))
        except Exception as error:  # no network, unknown asset...: the message below says what to do
            LOGGER.warning(f"teacher '{path}' could not be downloaded: {error}")
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint not found: '{path}'. Set 'teacher:' to a trained .pt file")
    try:
        teacher, _ = load_checkpoint(path, device=device)
    except Exception as error:  # torch/pickle raise many types for a damaged file; re-raise one clear error
        raise RuntimeError(
            f"teacher checkpoint '{path}' could not be read ({type(error).__name__}: {error}). The file is corrupt, "
            "truncated or not an Ultralytics checkpoint; re-export or re-download it"
        ) from error
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def check_teacher_classes(teacher_names: dict[int, str], data_names: dict[int, str]) -> None:
    """Raise when the teacher was trained on another class list than the student's dataset."""
    teacher_list, data_list = (
        [teacher_names[i] for i in sorted(teacher_names)],
        [data_names[i] for i in sorted(data_names)],
    )
    if teacher_list != data_list:
        raise ValueError(
            f"the teacher was trained on other classes than the dataset: teacher {len(teacher_list)} classes "
            f"{teacher_list[:8]}{'...' if len(teacher_list) > 8 else ''}, data {len(data_list)} classes "
            f"{data_list[:8]}{'...' if len(data_list) > 8 else ''}. Distil from a teacher trained on this dataset"
        )


REDUCED_DTYPES = (torch.float16, torch.bfloat16)


def amp_teacher_dtype(amp: bool | str | None, device_type: str) -> torch.dtype | None:
    """The dtype to store the teacher in for a run: the AMP autocast dtype on CUDA, None (keep fp32) otherwise.

    Args:
        amp: the run's AMP setting as Ultralytics reads it (True / "fp16", "bf16", False / "fp32" / None), after its
            AMP check (pass False when the trainer turned AMP off).
        device_type: "cuda", "cpu", "mps"...
    """
    if device_type != "cuda" or not amp or str(amp).lower() == "fp32":
        return None
    return torch.bfloat16 if str(amp).lower() == "bf16" else torch.float16


def teacher_dtype_for(stored: torch.dtype, autocast_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype the teacher should run in: the autocast dtype when autocast is on and the teacher is kept in reduced
    precision (an fp16 teacher under bf16 autocast would get bf16 activations), else the dtype it is stored in."""
    if autocast_dtype in REDUCED_DTYPES and stored in REDUCED_DTYPES:
        return autocast_dtype
    return stored


class Distiller:
    """Frozen teacher + loss modules. Called once per step with the student's views; returns weighted KD terms.

    Each method's terms are multiplied by its balance scale (``scales``, see :mod:`yolokd.engine.balance`).

    The teacher runs in eval mode under ``no_grad``; on CUDA with AMP it is stored in the autocast dtype (fp16, or
    bf16 for ``amp=bf16``) so that autocast does not re-cast its weights every step; a teacher stored in the other
    reduced dtype is moved to the active autocast dtype on its first step. KD maths runs in fp32 (losses cast their
    inputs).
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, entries: list[LossEntry], device: torch.device) -> None:
        self.teacher = teacher
        self.device = device
        self.teacher_adapter = adapter_for(teacher)
        student_adapter = adapter_for(student)
        check_head_pair(self.teacher_adapter.spec, student_adapter.spec)
        self.losses = nn.ModuleDict()
        for entry in entries:
            loss = LOSSES[entry.name].from_heads(entry.params, self.teacher_adapter, student_adapter)
            self.losses["_".join(loss.term_names)] = loss
        self.losses.to(device)
        self.term_names: tuple[str, ...] = tuple(n for loss in self.losses.values() for n in loss.term_names)
        # Frozen per-method scale set by the KD balance step (weight_mode auto); 1.0 until measured.
        self.scales: dict[str, float] = dict.fromkeys(self.losses, 1.0)
        self.branches: tuple[str, ...] = tuple(dict.fromkeys(loss.params.branch for loss in self.losses.values()))
        self.teacher_recorder = self.recorder_for(self.teacher_adapter)  # records inside teacher_views() only

    def method_terms(self) -> dict[str, tuple[str, ...]]:
        """Term names of each method (loss-module key)."""
        return {key: loss.term_names for key, loss in self.losses.items()}

    def grad_shares(self) -> dict[str, float | None]:
        """Each method's target gradient share of the GT loss (``grad_share``; None: its own scale), for the balance."""
        return {key: loss.params.grad_share for key, loss in self.losses.items()}

    def layer_shares(self) -> dict[str, float | None]:
        """Each method's cap on its pull per layer (``layer_share``; None: no cap), for the balance."""
        return {key: loss.params.layer_share for key, loss in self.losses.items()}

    def term_branches(self) -> dict[str, str]:
        """The head branch each term distils."""
        return {name: loss.params.branch for loss in self.losses.values() for name in loss.term_names}

    def stage_request(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(branches, parts) whose stage outputs some loss reads; empty parts when none does."""
        parts = tuple(dict.fromkeys(p for loss in self.losses.values() for p in loss.stage_parts))
        branches = tuple(dict.fromkeys(loss.params.branch for loss in self.losses.values() if loss.stage_parts))
        return branches, parts

    def recorder_for(self, adapter: HeadAdapter) -> StageRecorder:
        """A stage recorder for one model: the branches and parts some loss reads (none: it records nothing)."""
        branches, parts = self.stage_request()
        return StageRecorder(adapter, branches, parts)

    def use_half_teacher(self, dtype: torch.dtype = torch.float16) -> None:
        """Store the teacher in a reduced dtype (CUDA + AMP only): ``amp_teacher_dtype`` of the run, fp16 by default."""
        if dtype not in REDUCED_DTYPES:
            raise ValueError(f"teacher dtype: expected one of {REDUCED_DTYPES}, got {dtype}")
        self.teacher.to(dtype)

    @torch.no_grad()
    def teacher_views(self, images: Tensor) -> dict[str, View]:
        """Run the teacher once and return its view of each branch the losses need (all tensors detached)."""
        device_type = images.device.type
        autocast = torch.is_autocast_enabled(device_type)
        stored = next(self.teacher.parameters()).dtype
        dtype = teacher_dtype_for(stored, torch.get_autocast_dtype(device_type) if autocast else None)
        if dtype != stored:
            self.teacher.to(dtype)
        recorder = self.teacher_recorder
        with self.teacher_adapter.raw_outputs(), recorder.recording():
            preds = self.teacher(images if autocast else images.to(dtype))
            raw = self.teacher_adapter.split_branches(preds)
            return {b: self.teacher_adapter.build_view(raw[b], recorder.stages(b)) for b in self.branches}

    def __call__(
        self, student_views: dict[str, View], images: Tensor, targets: dict[str, Targets]
    ) -> dict[str, Tensor]:
        teacher_views = self.teacher_views(images)
        self.losses.train(torch.is_grad_enabled())
        terms: dict[str, Tensor] = {}
        with torch.autocast(images.device.type, enabled=False):
            for key, loss in self.losses.items():
                branch = loss.params.branch
                method_terms = loss(student_views[branch], teacher_views[branch], targets[branch])
                terms.update({name: term * self.scales[key] for name, term in method_terms.items()})
        return terms
