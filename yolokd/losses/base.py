"""The contract every distillation method follows: typed parameters + an ``nn.Module`` returning named terms."""

from __future__ import annotations

from dataclasses import Field, dataclass, fields
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from yolokd.views import HeadSpec, Targets, View

if TYPE_CHECKING:  # annotations only: losses read views and specs; adapters reach them through from_heads
    from yolokd.heads.base import HeadAdapter

BRANCHES = ("one2many", "one2one")
TUNE_BOUNDS = "tune_bounds"  # dataclass field metadata key: the field's default search range for ``yolokd tune``
WEIGHT_SPAN = 4.0  # default search range of a term weight or grad_share: default / 4 ... default x 4
POSITIVE_SPAN = 2.0  # of a positive field (a temperature): default / 2 ... default x 2

# Default ``grad_share`` by where a method pulls on the student. The balance matches whole-student gradient norms, but
# AdamW (Ultralytics' optimiser for runs under 10k iterations) normalises each parameter's step, so who steers a layer
# is decided by the per-layer ratio of the gradients. A method on the head's outputs (BCKD, CrossKD, LD, the task terms)
# spreads its gradient over the layers as the GT loss does; a method on intermediate features (PGD, DFD, G-DetKD, FGD,
# MGD, CWD, PKD, mimic) puts it near the layer it reads. Measured at initialisation (YOLOv8s -> YOLOv8n, evidence
# scenes; ``layer_concentration`` in the balance table): the 90th-percentile per-layer ratio, over the whole-student
# ratio, is 1.1-2.1 for BCKD and CrossKD and 9-28 for every feature method, so at a whole-student share of 1 the
# layers next to a feature method follow the teacher's features rather than the detection loss, and those methods
# made the student worse (README Results). A tenth of the share brings those layers back to about the GT's pull.
# ``yolokd balance`` prints each method's concentration on any pair. Only AdamW runs are measured.
#
# A measured cap per layer instead (``layer_share``, off by default) was tried and is not the default: the layers a
# feature method pulls hardest next to the GT loss are those the GT loss barely trains (the head levels where the
# student has no positive: the P5 box tower of a YOLOv8n from scratch has a GT gradient norm of 3e-9 at
# initialisation), so a cap on them scales PGD and G-DetKD down 1e3-1e9x, which is off, and from scratch they were
# no better for it (README, "A placebo row and a per-layer cap").
OUTPUT_GRAD_SHARE = 1.0
FEATURE_GRAD_SHARE = 0.1


def tune_bounds(low: float, high: float) -> dict[str, tuple[float, float]]:
    """Field metadata giving a parameter its search range: ``field(default=0.65, metadata=tune_bounds(0.3, 0.9))``."""
    return {TUNE_BOUNDS: (low, high)}


@dataclass
class LossParams:
    """Parameters shared by every method; each method subclasses this with its own fields (all defaulted).

    Fields whose name ends in ``weight`` are term weights and must be >= 0, and the fields a method lists in
    ``positive_fields`` (temperatures, sizes) must be > 0: both checked here, for every method.

    Attributes:
        branch: which head branch to distil on one2one/one2many heads (YOLOv10, YOLO26). ``one2many`` is the
            default: it is the dense branch whose gradient reaches the backbone and neck (Ultralytics detaches the
            one2one branch's inputs), so what the student learns from the teacher there shapes the shared
            features. ``one2one`` distils the NMS-free branch's head only. Heads without a one2one branch
            (YOLOv8, YOLO11) only have ``one2many``.
        grad_share: with ``balance.weight_mode: auto`` (the default), the method's terms are scaled so that their
            gradient on the student is this share of the GT loss's gradient, measured at the start of the run and
            again after each epoch (:mod:`yolokd.engine.balance`); the terms keep the paper's ratio to each other.
            Ignored in ``paper`` mode. Default: :data:`OUTPUT_GRAD_SHARE` for methods on the head's outputs,
            :data:`FEATURE_GRAD_SHARE` for methods on intermediate features (their ``Params`` say so). ``None``
            (null): the method's own normalisation is its rule and the auto balance leaves it at scale 1 (still
            measured and printed); LD's default, whose normalisation ties it to the GT DFL term (``yolokd.losses.ld``).
        layer_share: in ``weight_mode: auto``, an optional cap on the method's pull per layer: its scale is at most
            what makes its gradient on its 90th-percentile conv layer this multiple of the GT loss's gradient on that
            layer (``layer_pull`` in :mod:`yolokd.engine.balance`), measured with the share and re-measured each
            epoch. Default None (no cap): measured, a cap of 0.5 turned PGD and G-DetKD off (module comment above).
            ``yolokd tune`` does not search it. Ignored in ``paper`` mode.
    """

    branch: str = "one2many"
    grad_share: float | None = OUTPUT_GRAD_SHARE
    layer_share: float | None = None

    # Names of fields that must be > 0. A plain class attribute in subclasses (``positive_fields = ("temperature",)``),
    # never annotated there: an annotation would make it a config key.
    positive_fields: ClassVar[tuple[str, ...]] = ()
    # Former names of renamed fields, (old, new) pairs: a config that still uses an old name is read as the new one,
    # with a one-line warning (``yolokd.config``). A plain class attribute in subclasses, as ``positive_fields``.
    renamed_fields: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __post_init__(self) -> None:
        if self.branch not in BRANCHES:
            raise ValueError(f"branch={self.branch!r} is not one of {BRANCHES}")
        if self.grad_share is not None and not self.grad_share > 0:
            raise ValueError(f"grad_share={self.grad_share} must be > 0 (or null: the method's own scale)")
        if self.layer_share is not None and not self.layer_share > 0:
            raise ValueError(f"layer_share={self.layer_share} must be > 0 (or null: no cap on the pull per layer)")
        for name in self.positive_fields:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for field in fields(self):  # every term weight (``weight``, ``cls_weight``, ...) is a non-negative number
            value = getattr(self, field.name)
            if field.name.endswith("weight") and value < 0:
                raise ValueError(f"{field.name}={value} must be >= 0")

    @classmethod
    def field_names(cls) -> list[str]:
        """The YAML keys this method accepts (besides ``loss``)."""
        return [f.name for f in fields(cls)]

    @classmethod
    def search_bounds(cls, field: Field) -> tuple[float, float] | None:
        """Default ``yolokd tune`` range of one field; None where the field is not searched by default.

        A field's ``tune_bounds`` metadata wins; otherwise term weights (``*weight``) and ``grad_share`` span
        default / 4 ... default x 4 and ``positive_fields`` (temperatures, sizes) default / 2 ... default x 2. A weight
        at 0 (a term that is off), and text, boolean and tuple fields are not searched unless metadata says so.
        """
        if TUNE_BOUNDS in field.metadata:
            return tuple(field.metadata[TUNE_BOUNDS])
        default = field.default
        if field.name == "grad_share" and default is None:
            default = OUTPUT_GRAD_SHARE  # a method at its own scale: searched (around 1) only where a config sets one
        if isinstance(default, bool) or not isinstance(default, int | float) or default == 0:
            return None
        if field.name.endswith("weight") or field.name == "grad_share":
            return default / WEIGHT_SPAN, default * WEIGHT_SPAN
        if field.name in cls.positive_fields and isinstance(default, float):
            return default / POSITIVE_SPAN, default * POSITIVE_SPAN
        return None


class DistillLoss(nn.Module):
    """Base class of a distillation method.

    Subclasses set ``name`` (the registry key used as ``loss:`` in configs), ``Params`` and ``term_suffixes``
    and implement ``forward(student, teacher, targets) -> dict[str, Tensor]``: the method's terms, already
    weighted and normalised per the method's paper (the trainer multiplies by the batch size, as Ultralytics
    does for its own loss, so weights keep the papers' ratio to the GT loss).

    Everything a method owns (aligners, transformation modules, queues) lives in the module and is trained by
    the KD optimiser; none of it is ever part of the saved student.
    """

    name: ClassVar[str]
    Params: ClassVar[type[LossParams]] = LossParams
    term_suffixes: ClassVar[tuple[str, ...]] = ()
    task: ClassVar[str | None] = None  # the one Ultralytics task whose heads this loss reads (None: any task)
    task_outputs: ClassVar[str] = ""  # what it distils there, for the error message ("instance masks")
    # Head branch parts ("box", "cls") whose stage outputs the method reads from View.stages.
    stage_parts: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: LossParams, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        super().__init__()
        self.params = params
        self.check_pair(teacher_head, student_head)

    @classmethod
    def from_heads(cls, params: LossParams, teacher: HeadAdapter, student: HeadAdapter) -> DistillLoss:
        """Build the method for a teacher/student pair (what the Distiller calls).

        Methods read the two heads' specs; one that runs a model's own head layers (CrossKD runs the teacher's tail)
        overrides this to also keep that model's adapter.
        """
        return cls(params, teacher.spec, student.spec)

    def check_pair(self, teacher_head: HeadSpec, student_head: HeadSpec) -> None:
        """Raise a ValueError naming the fix when this method cannot run on this teacher/student pair."""
        branch = self.params.branch
        for role, head in (("teacher", teacher_head), ("student", student_head)):
            if branch not in head.branches:
                raise ValueError(
                    f"loss '{self.name}' distils branch '{branch}', but the {role} ({head.family}) only has "
                    f"{list(head.branches)}; set branch=one2many for this loss"
                )
            if self.task is not None and head.task != self.task:
                raise ValueError(
                    f"loss '{self.name}' distils {self.task_outputs}, but the {role} is a {head.task} model "
                    f"({head.family}); use it with {self.task} teachers and students only"
                )

    @property
    def term_names(self) -> tuple[str, ...]:
        """Names of the logged terms, e.g. ``bckd_cls``; a ``_o2o`` suffix marks the one2one branch."""
        branch_tag = "_o2o" if self.params.branch == "one2one" else ""
        return tuple(f"{self.name}_{suffix}{branch_tag}" for suffix in self.term_suffixes)

    def forward(self, student: View, teacher: View, targets: Targets) -> dict[str, Tensor]:
        raise NotImplementedError
