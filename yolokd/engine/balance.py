"""KD balance: how strongly each KD term pulls on the student, next to the GT loss, before any step is taken.

Papers tune their KD weights against their detector's loss (mmdetection's GFL, FCOS, RetinaNet). Ultralytics' loss
is larger (box gain 7.5, normalised by the summed target scores), so a paper weight is not a transferable number:
LD at its paper weight was about 1/500 of DFL per anchor, PGD's cls terms started at 3x the whole GT loss.

What transfers is a share of the gradient. At the start of a run, over the first ``batches`` training batches
(the real teacher, the real student, no optimiser step), :func:`measure_balance` records for every KD term and
for each GT component (box, cls, dfl) its value and the L2 norm of its gradient on the student's parameters.
In ``weight_mode: auto`` (the default) each method then gets one scale:

    scale_m = grad_share_m * ||∇ L_GT|| / ||∇ Σ_terms(m) L_t||

so that the method's gradient on the student is ``grad_share_m`` times the GT loss's (the method's own terms keep
their paper ratio to each other). With ``every_epoch`` (the default) the two gradient norms are measured again at
the end of every epoch and the scale is reset for the next one, so the share holds for the whole run: measured
once at initialisation it drifts, because a student trained from scratch is unlike itself a few hundred steps
later (its GT gradient shrinks several-fold, and terms weighted by its own scores, LD's ``max σ(s)``, grow from
near zero: a scale frozen at step 0 put LD at ~45x the GT gradient by the end of a 12-epoch run, measured). Each
epoch's scales are saved in ``kd_state.pt`` and reused on resume, bit for bit, and logged to ``results.csv``.
``weight_mode: paper`` keeps each method's paper weights as written (scale 1); the table is still measured.

The measurement leaves no trace: the student's and the KD modules' parameters and buffers (BN statistics,
G-DetKD's queue), the random-number generators and the data set's mosaic buffer are restored afterwards.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

WEIGHT_MODES = ("auto", "paper")
DATASET_CACHES = ("buffer", "ims", "im_hw0", "im_hw")  # Ultralytics BaseDataset lists that loading an image changes
GT_TOTAL = "gt_total"


@dataclass
class Balance:
    """How each method's overall KD weight is set (experiment section ``balance:``).

    Attributes:
        weight_mode: ``auto`` scales each method so its gradient on the student is ``grad_share`` times the GT
            loss's, measured at the start of the run (and again each epoch, see ``every_epoch``); ``paper`` keeps the
            papers' weights as written.
        batches: training batches the balance is measured on (mean of per-batch gradient norms).
        start_epoch: the balance is first measured after this many epochs (a float: 0.5 = half-way through the
            first); KD is off until then and the student trains on the GT loss alone. 0 = before the first step.
        every_epoch: in auto mode, measure the gradient norms again at the end of every epoch (GT loss and each
            method only, ``batches`` batches) and reset the scales for the next epoch; False freezes the first
            measurement for the whole run.
    """

    weight_mode: str = "auto"
    batches: int = 4
    start_epoch: float = 0.0
    every_epoch: bool = True

    def __post_init__(self) -> None:
        if self.weight_mode not in WEIGHT_MODES:
            raise ValueError(f"weight_mode={self.weight_mode!r} is not one of {WEIGHT_MODES}")
        if self.batches < 1:
            raise ValueError(f"batches={self.batches} must be >= 1")
        if self.start_epoch < 0:
            raise ValueError(f"start_epoch={self.start_epoch} must be >= 0")


@dataclass
class TermBalance:
    """One measured quantity: its mean value per batch and the mean L2 norm of its gradient on the student.

    ``grad_norm`` is None where it was not measured (the per-epoch update measures only what the scales need).
    """

    value: float
    grad_norm: float | None


@dataclass
class MethodBalance:
    """One method (loss module): its gradient share of the GT loss's before and after its scale."""

    terms: list[str]
    grad_norm: float
    measured_share: float
    grad_share: float
    scale: float
    concentration: float | None = None  # layer_concentration(); None where not measured (the per-epoch update)


@dataclass
class BalanceReport:
    """Everything the balance step measured and decided; saved as ``kd_balance.json`` / ``.md`` and in kd_state."""

    weight_mode: str
    batches: int
    gt: dict[str, TermBalance]
    terms: dict[str, TermBalance]
    methods: dict[str, MethodBalance] = field(default_factory=dict)

    @property
    def scales(self) -> dict[str, float]:
        """Frozen scale of each method (1.0 in paper mode)."""
        return {name: method.scale for name, method in self.methods.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BalanceReport:
        return cls(
            weight_mode=data["weight_mode"],
            batches=data["batches"],
            gt={k: TermBalance(**v) for k, v in data["gt"].items()},
            terms={k: TermBalance(**v) for k, v in data["terms"].items()},
            methods={k: MethodBalance(**v) for k, v in data["methods"].items()},
        )

    def markdown(self) -> str:
        """Two tables: every term next to the GT components, then each method's share and scale."""
        gt_grad = self.gt[GT_TOTAL].grad_norm
        lines = [
            f"KD balance over the first {self.batches} batches (weight_mode: {self.weight_mode}); gradient norms on "
            "the student's parameters, shares relative to the whole GT loss's.",
            "",
            "| term | value / batch | grad norm | grad share of GT |",
            "|---|---:|---:|---:|",
        ]
        for name, term in {**self.gt, **self.terms}.items():
            if term.grad_norm is None:
                lines.append(f"| {name} | {term.value:.4g} | - | - |")
                continue
            share = term.grad_norm / gt_grad if gt_grad > 0 else math.nan
            lines.append(f"| {name} | {term.value:.4g} | {term.grad_norm:.4g} | {share:.3g} |")
        lines += [
            "",
            "| method | terms | share at paper weights | target share | scale | share after scaling "
            "| layer concentration (q90) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, method in self.methods.items():
            concentration = "-" if method.concentration is None else f"{method.concentration:.3g}"
            lines.append(
                f"| {name} | {', '.join(method.terms)} | {method.measured_share:.3g} | {method.grad_share:.3g} | "
                f"{method.scale:.4g} | {method.measured_share * method.scale:.3g} | {concentration} |"
            )
        lines += [
            "",
            "Layer concentration: over the conv layers a method reaches, the 90th percentile of (its gradient norm / "
            "the GT loss's) on one layer, divided by the same ratio over the whole student; about 1 when the method "
            "pulls every layer as the GT loss does, large when its pull is concentrated near the features it reads "
            "(yolokd.losses.base.FEATURE_GRAD_SHARE).",
        ]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Write ``kd_balance.json`` and ``kd_balance.md`` into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path = folder / "kd_balance.json", folder / "kd_balance.md"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        md_path.write_text(self.markdown())
        return json_path, md_path


GradReduce = Callable[[list[Tensor | None], list[nn.Parameter]], list[Tensor]]
SumsReduce = Callable[[dict[str, list[float | None]]], dict[str, list[float | None]]]


def grad_norm(output: Tensor, params: list[nn.Parameter], reduce: GradReduce | None = None) -> float:
    """L2 norm over `params` of d output / d params (0 for parameters the output does not reach)."""
    return float(grad_squares(output, params, reduce).sum().sqrt())


def grad_squares(output: Tensor, params: list[nn.Parameter], reduce: GradReduce | None = None) -> Tensor:
    """(P,) squared L2 norm of d output / d param for each of `params` (0 where the output does not reach it).

    ``reduce`` (DDP, :func:`yolokd.engine.ddp.sum_gradients`) sums each parameter's gradient over the ranks first:
    the norm of the global batch's gradient, as one process on the whole batch measures it. Every rank takes part,
    with no gradient (None) where its `output` does not reach a parameter.
    """
    if output.requires_grad:
        grads = list(torch.autograd.grad(output, params, retain_graph=True, allow_unused=True))
    elif reduce is None:
        return torch.zeros(len(params))
    else:
        grads = [None] * len(params)
    if reduce is not None:
        grads = reduce(grads, params)
    zero = torch.zeros((), device=params[0].device) if params else torch.zeros(())
    return torch.stack([zero if g is None else g.detach().float().pow(2).sum() for g in grads]).cpu()


def layer_concentration(
    method_squares: Tensor, gt_squares: Tensor, is_conv: Tensor, quantile: float = 0.9
) -> float | None:
    """How much more a method pulls on the layers it pulls hardest than on the student as a whole, next to the GT.

    Per conv weight the method reaches, ``r = ||g_method|| / ||g_GT||``, divided by the same ratio over all
    parameters; returns the `quantile` of r (the next higher measured r; None when the method reaches no conv weight).
    About 1 when the method's gradient is spread over the layers as the GT loss's is (methods on the head's outputs);
    much larger when it is concentrated near the layer it reads (methods on intermediate features). A layer the GT
    loss does not reach at all in the measured batches (a head level with no positive) counts as infinitely
    concentrated.

    Args:
        method_squares: (P,) squared gradient norm of the method per parameter, summed over the measured batches.
        gt_squares: (P,) the same for the whole GT loss.
        is_conv: (P,) True for conv weights (parameters of 2 or more dimensions; norms and biases are left out).
    """
    reached = is_conv & (method_squares > 0)
    if not bool(reached.any()) or not float(gt_squares.sum()) > 0:
        return None
    whole = (method_squares.sum() / gt_squares.sum()).sqrt()
    ratios = (method_squares[reached] / gt_squares[reached]).sqrt() / whole  # x / 0 = inf: a layer GT never reaches
    return float(torch.quantile(ratios.double(), quantile, interpolation="higher"))  # "linear" makes inf * 0 = NaN


def method_scales(
    gt_grad: float, method_grads: dict[str, float], shares: dict[str, float], mode: str
) -> dict[str, float]:
    """Frozen scale per method: ``share * gt_grad / method_grad`` in auto mode, 1.0 in paper mode.

    Raises:
        ValueError: in auto mode, when a method's or the GT loss's gradient is zero or not finite (nothing to
            scale against), naming the fix.
    """
    if mode == "paper":
        return dict.fromkeys(method_grads, 1.0)
    if not (math.isfinite(gt_grad) and gt_grad > 0):
        raise ValueError(
            f"KD balance: the GT loss has gradient norm {gt_grad} on the student, so no KD weight can be set from "
            "it; check the data's labels, or set balance.weight_mode=paper"
        )
    scales = {}
    for name, grad in method_grads.items():
        if not (math.isfinite(grad) and grad > 0):
            raise ValueError(
                f"KD balance: method '{name}' has gradient norm {grad} on the student over the balance batches "
                "(student equal to the teacher, or a term that never reaches the student), so its auto weight is "
                "undefined; set balance.weight_mode=paper or remove the method"
            )
        scales[name] = shares[name] * gt_grad / grad
    return scales


@contextmanager
def preserved_state(modules: Iterable[nn.Module], dataset: Any = None) -> Iterator[None]:
    """Restore the modules' parameters and buffers, every RNG and the data set's mosaic buffer and image cache.

    Ultralytics' training set keeps the images it loaded in ``ims`` and their indices in ``buffer`` (mosaic draws
    its partners from it); both are put back as they were, so training starts exactly as without the balance.
    """
    modules = list(modules)
    saved = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    lists = {
        name: list(getattr(dataset, name)) for name in DATASET_CACHES if isinstance(getattr(dataset, name, None), list)
    }
    try:
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
            yield
    finally:
        for module, state in zip(modules, saved, strict=True):
            module.load_state_dict(state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        for name, items in lists.items():
            getattr(dataset, name)[:] = items


def measure_balance(
    model: nn.Module,
    criterion: Any,
    batches: Iterable[dict[str, Any]],
    shares: dict[str, float],
    mode: str,
    detail: bool = True,
    reduce_grads: GradReduce | None = None,
    reduce_sums: SumsReduce | None = None,
) -> BalanceReport:
    """Measure every GT component and KD term on `batches` and decide each method's scale.

    Args:
        model: the student (its ``criterion`` is `criterion`); run in train mode as in training.
        criterion: the run's :class:`~yolokd.engine.criterion.DistillationCriterion` (kd_factor and scales at 1).
        batches: preprocessed training batches.
        shares: each method's target gradient share (``grad_share``), keyed by loss-module name.
        mode: ``auto`` or ``paper``.
        detail: gradient norms of every GT component and KD term (the table); False measures only the whole GT
            loss's and each method's (what the scales need; the per-epoch update), the others' norms are NaN.
        reduce_grads: under DDP, sums each measured gradient over the ranks before its norm is taken
            (:func:`yolokd.engine.ddp.sum_gradients`): each rank measures its share of every global batch.
        reduce_sums: under DDP, averages each term's [value sum, gradient-norm sum] over the ranks
            (:func:`yolokd.engine.ddp.average_sums`), so every rank decides the same scales.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    is_conv = torch.tensor([p.ndim > 1 for p in params], dtype=torch.bool)
    methods = criterion.distiller.method_terms()
    sums: dict[str, list[float | None]] = {}
    layer_squares: dict[str, Tensor] = {}  # per-parameter squared gradient norms (detail only): layer_concentration
    gt_names: tuple[str, ...] = ()
    count = 0
    model.train()
    for batch in batches:
        gt_parts, terms = criterion.loss_parts(model(batch["img"]), batch)
        batch_size = batch["img"].shape[0]
        gt_names = tuple(gt_parts)
        values = {**gt_parts, GT_TOTAL: torch.stack(list(gt_parts.values())).sum()}
        values.update({name: term * batch_size for name, term in terms.items()})
        for method, names in methods.items():
            values[f"method:{method}"] = torch.stack([terms[n] for n in names]).sum() * batch_size
        for name, value in values.items():
            entry = sums.setdefault(name, [0.0, 0.0])
            entry[0] += float(value.detach()) / batch_size
            if detail and (name == GT_TOTAL or name.startswith("method:")):
                squares = grad_squares(value, params, reduce_grads)
                layer_squares[name] = layer_squares.get(name, 0) + squares
                entry[1] += float(squares.sum().sqrt())
            elif detail or name == GT_TOTAL or name.startswith("method:"):
                entry[1] += grad_norm(value, params, reduce_grads)
            else:
                entry[1] = None
        count += 1
    if reduce_sums is not None:
        sums = reduce_sums(sums)
    if count == 0:
        raise ValueError("KD balance: no training batch to measure on; the training set is empty")
    bad = [
        name
        for name in criterion.distiller.term_names
        if not math.isfinite(sums[name][0]) or (detail and not math.isfinite(sums[name][1]))
    ]
    if bad:
        raise FloatingPointError(
            f"KD term(s) {bad} became NaN/Inf at the KD balance measurement; no optimiser step used them. "
            "Check the teacher checkpoint and the term's weights"
        )
    mean = {
        name: TermBalance(value / count, None if norm is None else norm / count) for name, (value, norm) in sums.items()
    }
    gt = {name: mean[name] for name in (*gt_names, GT_TOTAL)}
    method_grads = {m: mean[f"method:{m}"].grad_norm for m in methods}
    scales = method_scales(gt[GT_TOTAL].grad_norm, method_grads, shares, mode)
    gt_grad = gt[GT_TOTAL].grad_norm
    report = BalanceReport(
        weight_mode=mode,
        batches=count,
        gt=gt,
        terms={name: mean[name] for name in criterion.distiller.term_names},
        methods={
            m: MethodBalance(
                terms=list(methods[m]),
                grad_norm=method_grads[m],
                measured_share=method_grads[m] / gt_grad if gt_grad > 0 else math.nan,
                grad_share=shares[m],
                scale=scales[m],
                concentration=layer_concentration(layer_squares[f"method:{m}"], layer_squares[GT_TOTAL], is_conv)
                if detail
                else None,
            )
            for m in methods
        },
    )
    return report
