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

import math
import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from yolokd.engine.balance_grads import (
    GradReduce,
    SumsReduce,
    grad_norm,
    grad_squares,
    hardest_pulled,
    layer_concentration,
    layer_pull,
)
from yolokd.engine.balance_report import GT_TOTAL, BalanceReport, MethodBalance, TermBalance

WEIGHT_MODES = ("auto", "paper")
DATASET_CACHES = ("buffer", "ims", "im_hw0", "im_hw")  # Ultralytics BaseDataset lists that loading an image changes


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


def method_scales(
    gt_grad: float,
    method_grads: dict[str, float],
    shares: dict[str, float | None],
    mode: str,
    layer_pulls: dict[str, float | None] | None = None,
    layer_shares: dict[str, float | None] | None = None,
) -> dict[str, float]:
    """Frozen scale per method: ``share * gt_grad / method_grad`` in auto mode, 1.0 in paper mode and for a method
    whose share is None (its own normalisation sets its size: LD's default).

    A method with a layer cap (``layer_shares[m]``; opt-in, ``LossParams.layer_share``) gets at most
    ``layer_share / layer_pull``: whatever its whole-student share, on its 90th-percentile layer it then pulls no
    more than ``layer_share`` times the GT loss does there (``layer_pulls[m]``, measured at scale 1).

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
    layer_pulls, layer_shares = layer_pulls or {}, layer_shares or {}
    scales = {}
    for name, grad in method_grads.items():
        if shares[name] is None:
            scales[name] = 1.0
            continue
        if not (math.isfinite(grad) and grad > 0):
            raise ValueError(
                f"KD balance: method '{name}' has gradient norm {grad} on the student over the balance batches "
                "(student equal to the teacher, or a term that never reaches the student), so its auto weight is "
                "undefined; set balance.weight_mode=paper or remove the method"
            )
        scales[name] = shares[name] * gt_grad / grad
        cap, pull = layer_shares.get(name), layer_pulls.get(name)
        if cap is not None and pull is not None:  # None pull: no conv layer both reach, nothing to cap
            scales[name] = min(scales[name], cap / pull)
    return scales


@contextmanager
def preserved_state(modules: Iterable[nn.Module], dataset: Any = None) -> Iterator[None]:
    """Restore the modules' parameters and buffers, every RNG and the data set's mosaic buffer and image cache.

    Ultralytics' training set keeps the images it loaded in ``ims`` and their indices in ``buffer`` (mosaic draws
    its partners from it); both are put back as they were. So are its Albumentations transforms' own generators
    (albumentations 2 keeps them apart from ``random`` and numpy's global state, and Ultralytics re-seeds them, as new
    objects, on their first call): training starts exactly as without the balance (tests/integration/
    test_kd_identity.py; without this, a KD run's augmentation drifted from its baseline's from the first image the
    balance had augmented).
    """
    modules = list(modules)
    saved = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    lists = {
        name: list(getattr(dataset, name)) for name in DATASET_CACHES if isinstance(getattr(dataset, name, None), list)
    }
    generators = _transform_generators(dataset)
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
        for node, attributes, states in generators:
            for name, value in attributes.items():
                setattr(node, name, value)
            attributes["py_random"].setstate(states[0])
            attributes["random_generator"].bit_generator.state = states[1]


def _transform_generators(dataset: Any) -> list[tuple[Any, dict[str, Any], tuple[Any, Any]]]:
    """Each transform of the data set that keeps its own generators (albumentations 2's ``py_random`` and
    ``random_generator``, and its ``seed`` when it has one): (transform, those attributes, the generators' states).

    Walks Ultralytics' transform tree: ``Compose.transforms`` lists and ``Albumentations.transform``.
    """
    found = []
    stack, seen = [getattr(dataset, "transforms", None)], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        py_random, generator = getattr(node, "py_random", None), getattr(node, "random_generator", None)
        if isinstance(py_random, random.Random) and isinstance(generator, np.random.Generator):
            attributes = {"py_random": py_random, "random_generator": generator}
            if hasattr(node, "seed"):
                attributes["seed"] = node.seed
            found.append((node, attributes, (py_random.getstate(), generator.bit_generator.state)))
        children = getattr(node, "transforms", None)
        stack.extend(children if isinstance(children, (list, tuple)) else [children])
        stack.append(getattr(node, "transform", None))
    return found


@dataclass
class BalanceSums:
    """The balance batches added up: per quantity [value sum, gradient-norm sum (None: not measured)], the
    per-parameter squared gradient norms of the GT loss and of each method (for ``layer_concentration`` and
    ``layer_pull``), the GT component names and the number of batches."""

    sums: dict[str, list[float | None]] = field(default_factory=dict)
    layer_squares: dict[str, Tensor] = field(default_factory=dict)
    gt_names: tuple[str, ...] = ()
    count: int = 0

    def add(
        self,
        values: dict[str, Tensor],
        batch_size: int,
        params: list[nn.Parameter],
        detail: bool,
        reduce_grads: GradReduce | None,
    ) -> None:
        """Add one batch's values (per image) and the gradient norms that ``detail`` asks for."""
        for name, value in values.items():
            entry = self.sums.setdefault(name, [0.0, 0.0])
            entry[0] += float(value.detach()) / batch_size
            if name == GT_TOTAL or name.startswith("method:"):  # per layer: concentration and the layer cap
                squares = grad_squares(value, params, reduce_grads)
                self.layer_squares[name] = self.layer_squares.get(name, 0) + squares
                entry[1] += float(squares.sum().sqrt())
            elif detail:
                entry[1] += grad_norm(value, params, reduce_grads)
            else:
                entry[1] = None
        self.count += 1


def batch_values(
    gt_parts: dict[str, Tensor], terms: dict[str, Tensor], methods: dict[str, tuple[str, ...]], batch_size: int
) -> dict[str, Tensor]:
    """One batch's GT components, their total (``GT_TOTAL``), every KD term and each method's sum
    (``method:<name>``); KD terms times the batch size, as the trainer adds them to the GT loss."""
    values = {**gt_parts, GT_TOTAL: torch.stack(list(gt_parts.values())).sum()}
    values.update({name: term * batch_size for name, term in terms.items()})
    for method, names in methods.items():
        values[f"method:{method}"] = torch.stack([terms[n] for n in names]).sum() * batch_size
    return values


def sum_batches(
    model: nn.Module, criterion: Any, batches: Iterable[dict[str, Any]], detail: bool, reduce_grads: GradReduce | None
) -> BalanceSums:
    """Run the student in train mode on every batch and add up what the balance measures."""
    params = [p for p in model.parameters() if p.requires_grad]
    methods = criterion.distiller.method_terms()
    totals = BalanceSums()
    model.train()
    for batch in batches:
        gt_parts, terms = criterion.loss_parts(model(batch["img"]), batch)
        batch_size = batch["img"].shape[0]
        totals.gt_names = tuple(gt_parts)
        totals.add(batch_values(gt_parts, terms, methods, batch_size), batch_size, params, detail, reduce_grads)
    return totals


def check_finite(sums: dict[str, list[float | None]], term_names: Iterable[str], detail: bool) -> None:
    """Raise FloatingPointError naming the KD terms whose value (or, with ``detail``, gradient norm) is not finite."""
    bad = [
        name for name in term_names if not math.isfinite(sums[name][0]) or (detail and not math.isfinite(sums[name][1]))
    ]
    if bad:
        raise FloatingPointError(
            f"KD term(s) {bad} became NaN/Inf at the KD balance measurement; no optimiser step used them. "
            "Check the teacher checkpoint and the term's weights"
        )


def measure_balance(
    model: nn.Module,
    criterion: Any,
    batches: Iterable[dict[str, Any]],
    shares: dict[str, float | None],
    mode: str,
    detail: bool = True,
    reduce_grads: GradReduce | None = None,
    reduce_sums: SumsReduce | None = None,
    layer_shares: dict[str, float | None] | None = None,
) -> BalanceReport:
    """Measure every GT component and KD term on `batches` and decide each method's scale.

    Args:
        model: the student (its ``criterion`` is `criterion`); run in train mode as in training.
        criterion: the run's :class:`~yolokd.engine.criterion.DistillationCriterion` (kd_factor and scales at 1).
        batches: preprocessed training batches.
        shares: each method's target gradient share (``grad_share``; None: its own scale), keyed by loss-module name.
        mode: ``auto`` or ``paper``.
        detail: gradient norms of every GT component and KD term (the table); False measures only the whole GT
            loss's and each method's (what the scales need; the per-epoch update), the others' norms are NaN.
        reduce_grads: under DDP, sums each measured gradient over the ranks before its norm is taken
            (:func:`yolokd.engine.ddp.sum_gradients`): each rank measures its share of every global batch.
        reduce_sums: under DDP, averages each term's [value sum, gradient-norm sum] over the ranks
            (:func:`yolokd.engine.ddp.average_sums`), so every rank decides the same scales.
        layer_shares: each method's cap on its per-layer pull (``layer_share``; None or absent: no cap).
    """
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    is_conv = torch.tensor([p.ndim > 1 for p in model.parameters() if p.requires_grad], dtype=torch.bool)
    methods = criterion.distiller.method_terms()
    totals = sum_batches(model, criterion, batches, detail, reduce_grads)
    sums = totals.sums if reduce_sums is None else reduce_sums(totals.sums)
    if totals.count == 0:
        raise ValueError("KD balance: no training batch to measure on; the training set is empty")
    check_finite(sums, criterion.distiller.term_names, detail)
    count, squares = totals.count, totals.layer_squares
    mean = {
        name: TermBalance(value / count, None if norm is None else norm / count) for name, (value, norm) in sums.items()
    }
    gt = {name: mean[name] for name in (*totals.gt_names, GT_TOTAL)}
    method_grads = {m: mean[f"method:{m}"].grad_norm for m in methods}
    gt_squares = squares[GT_TOTAL]
    pulls = {m: layer_pull(squares[f"method:{m}"], gt_squares, is_conv) for m in methods}
    layer_shares = layer_shares or {}
    scales = method_scales(gt[GT_TOTAL].grad_norm, method_grads, shares, mode, pulls, layer_shares)
    gt_grad = gt[GT_TOTAL].grad_norm
    return BalanceReport(
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
                concentration=layer_concentration(squares[f"method:{m}"], gt_squares, is_conv) if detail else None,
                layer_share=layer_shares.get(m),
                layer_pull=pulls[m],
                hardest_layers=[list(e) for e in hardest_pulled(squares[f"method:{m}"], gt_squares, is_conv, names)]
                if detail
                else [],
            )
            for m in methods
        },
    )


# the report and gradient helpers live in balance_report and balance_grads; the trainer and tests import them from here
__all__ = [
    "GT_TOTAL",
    "Balance",
    "BalanceReport",
    "grad_norm",
    "layer_concentration",
    "layer_pull",
    "measure_balance",
    "method_scales",
    "preserved_state",
]
