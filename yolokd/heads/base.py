"""The head-adapter protocol: what yolokd needs from one family of dense heads, and nothing more.

A head adapter is the one place that knows a family's Ultralytics internals (module names such as ``cv2``/``cv3``,
``one2one_*``, ``nl``, ``reg_max``, the raw prediction dicts). It reads a :class:`~yolokd.views.HeadSpec` once,
turns raw outputs into :class:`~yolokd.views.View` s, names the modules whose outputs are recorded (for
:class:`~yolokd.heads.recorder.StageRecorder`), and runs the model's own head layers for the methods that need
them (CrossKD's cross-head pass, G-DetKD's head transfer). Losses, the criterion and the trainer talk to heads only
through these methods.

A new head family is one new file: a subclass of :class:`HeadAdapter` listing the exact head classes it reads
(``head_types``), added to ``yolokd.heads.ADAPTERS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from torch import Tensor, nn

from yolokd.views import PREACTIVATION, HeadSpec, View

RawOutputs = dict[str, Any]  # one branch's raw head outputs, in the family's own format


class HeadAdapter(ABC):
    """Reads one model's head; one adapter per model instance (teacher, student, the student's EMA).

    Subclasses set ``head_types`` (matched by exact type: a task subclass such as ``Segment`` is not its parent
    ``Detect``), ``task`` and ``models``, and implement the abstract methods.

    Attributes:
        head: the model's head module (the last module of ``model.model``).
        spec: what methods may know about the head, read once.
    """

    head_types: ClassVar[tuple[type[nn.Module], ...]] = ()
    task: ClassVar[str] = "detect"  # Ultralytics' task name of the models this family serves
    models: ClassVar[str] = ""  # the model series it covers, for messages (e.g. "YOLOv8, YOLO11")

    def __init__(self, model: nn.Module) -> None:
        head = head_of(model)
        if not self.handles(head):
            raise TypeError(f"{type(self).__name__} reads {[t.__name__ for t in self.head_types]}, not {type(head)}")
        self.head = head
        self.spec = self.read_spec()

    @classmethod
    def handles(cls, head: nn.Module | None) -> bool:
        """True when this family reads ``head`` (exact type match)."""
        return type(head) in cls.head_types

    @abstractmethod
    def read_spec(self) -> HeadSpec:
        """The head's spec (classes, strides, reg_max, branches, widths, stages)."""

    @abstractmethod
    def split_branches(self, preds: Any) -> dict[str, RawOutputs]:
        """The model's forward output (training or eval format) -> raw outputs per branch (``one2many`` ...)."""

    @abstractmethod
    def build_view(self, raw: RawOutputs, stages: dict[str, list[list[Tensor]]] | None = None) -> View:
        """One branch's raw outputs (+ recorded stage outputs) -> a View."""

    @abstractmethod
    def decode(self, box_output: Tensor, anchors: Tensor) -> Tensor:
        """(B, A, 4R) raw box output + (A, 2) anchors -> (B, A, 4) xyxy boxes in grid units."""

    def decode_in_box_frame(self, box_output: Tensor, anchors: Tensor) -> Tensor:
        """(B, A, 4R) raw box output + (A, 2) anchors -> (B, A, 4) xyxy boxes in grid units, in each box's own frame.

        Axis-aligned heads: the image frame (``decode``). Heads whose boxes live in a frame of their own (OBB: the
        ltrb distances in the frame of the anchor's angle) override it.
        """
        return self.decode(box_output, anchors)

    @abstractmethod
    def stage_modules(self, branch: str, part: str, stage: int) -> list[nn.Module]:
        """The modules whose forward outputs are one stage's recorded points.

        Args:
            branch: ``one2many`` or ``one2one``.
            part: ``box``/``cls`` (stage output) or ``box_preact``/``cls_preact`` (its pre-activation).
            stage: 0 .. ``spec.num_stages - 1``.

        Returns:
            L modules, one per level (P3 first), for heads with a tower per level; or one module that the head calls
            once per level, in level order, for heads that share one tower across levels.
        """

    @abstractmethod
    def run_tail(
        self, branch: str, part: str, level: int, stage: int, x: Tensor, preactivation: bool = False
    ) -> Tensor:
        """Run one level's tower of this head from ``stage`` to its predictor on a foreign input ``x`` (CrossKD)."""

    def run_tail_outputs(
        self, branch: str, part: str, level: int, stage: int, x: Tensor, preactivation: bool = False
    ) -> dict[str, Tensor]:
        """As :meth:`run_tail`, with every output the head computes from that tower's tail, by name.

        ``{"box" or "cls": run_tail's output}``, plus the family's extra outputs on that tower (FCOS's box tower:
        ``"centerness"`` (B, k, H_l, W_l) logits, from the same tower output). Heads without extra outputs: only
        run_tail's.
        """
        return {part.removesuffix(PREACTIVATION): self.run_tail(branch, part, level, stage, x, preactivation)}

    @abstractmethod
    def raw_outputs(self) -> AbstractContextManager[None]:
        """Context in which an eval-mode forward returns the raw training-format outputs (no decoding, no top-k)."""

    def head_state(self) -> dict[str, Tensor]:
        """The head's parameters and buffers by name; the tensors share storage with the model (copy into them)."""
        return self.head.state_dict()


def head_of(model: nn.Module) -> nn.Module | None:
    """The head of an Ultralytics model (the last module of ``model.model``), or None when it has none."""
    layers = getattr(model, "model", None)
    return layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None


def check_head_pair(teacher: HeadSpec, student: HeadSpec) -> None:
    """Raise a ValueError naming the mismatch when a teacher's head cannot supervise the student's."""
    if teacher.task != student.task:
        raise ValueError(
            f"the teacher is a {teacher.task} model ({teacher.family}) but the student is a {student.task} model "
            f"({student.family}): teacher and student must be of the same task; pick a {student.task} teacher"
        )
    if teacher.num_classes != student.num_classes:
        raise ValueError(
            f"teacher predicts {teacher.num_classes} classes but the student predicts {student.num_classes}: "
            "distil from a teacher trained on the same dataset (same class list)"
        )
    if teacher.strides != student.strides:
        raise ValueError(
            f"teacher pyramid levels (strides {list(teacher.strides)}) differ from the student's "
            f"({list(student.strides)}): per-anchor distillation needs the same levels; pick a teacher of the "
            "same pyramid layout (e.g. P3-P5 for both)"
        )
