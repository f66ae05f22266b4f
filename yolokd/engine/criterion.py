"""The student's criterion during distillation: Ultralytics' detection loss + every KD term, in one call.

Ultralytics calls ``model.loss(batch)`` -> ``model.criterion(preds, batch)`` right after the student's forward.
yolokd swaps ``model.criterion`` for :class:`DistillationCriterion`, a plain object (never an ``nn.Module``, so
nothing of it joins the student's parameters). It computes the student's label assignment once, reuses it for the
GT loss and for every KD loss, runs the teacher, and returns all terms by name so they reach the progress line and
``results.csv``.

It stays installed for the whole run: a deep copy or pickle of the student (Ultralytics' EMA, checkpoints, NaN
recovery) carries the student's plain Ultralytics criterion instead (a copy of ``base``), never the teacher, the KD
modules or a hook. The student's stage outputs are recorded inside :meth:`DistillationCriterion.recording` only,
which the trainer opens around each step, each validation and each balance measurement.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from ultralytics.utils.loss import E2ELoss, v8DetectionLoss

from yolokd.engine.distiller import Distiller
from yolokd.heads import adapter_for
from yolokd.views import Targets


def assign_targets(criterion: v8DetectionLoss, raw: dict, batch: dict[str, Any]) -> tuple[Tensor, dict, Targets]:
    """Run Ultralytics' assigner + detection loss on one branch; return (gain-scaled loss (3,), items, Targets)."""
    (fg_mask, gt_index, target_boxes, _, _), loss, items = criterion.get_assigned_targets_and_loss(raw, batch)
    feats = raw["feats"]
    batch_size = feats[0].shape[0]
    image_size = torch.tensor(feats[0].shape[2:], device=criterion.device, dtype=torch.float32) * criterion.stride[0]
    labels = torch.cat((batch["batch_idx"].view(-1, 1), batch["cls"].view(-1, 1), batch["bboxes"]), 1)
    padded = criterion.preprocess(labels.to(criterion.device), batch_size, scale_tensor=image_size[[1, 0, 1, 0]])
    gt_labels, gt_boxes = padded.split((1, 4), 2)
    targets = Targets(
        fg_mask=fg_mask.bool(),
        gt_index=gt_index,
        target_boxes=target_boxes,
        gt_boxes=gt_boxes,
        gt_labels=gt_labels.squeeze(-1).long(),
        gt_mask=gt_boxes.sum(2) > 0,
        image_size=image_size,
    )
    return loss, items, targets


def detection_loss_and_targets(base: object, raw: dict[str, dict], batch: dict) -> tuple[Tensor, dict, dict]:
    """Reproduce ``base(preds, batch)`` (v8DetectionLoss or E2ELoss) while keeping each branch's Targets.

    Returns:
        loss: detection loss x batch size, as Ultralytics returns it.
        items: detached loss items, as Ultralytics logs them.
        targets: ``{branch: Targets}``.
    """
    batch_size = raw["one2many"]["feats"][0].shape[0]
    if isinstance(base, E2ELoss):
        many_loss, _, many_targets = assign_targets(base.one2many, raw["one2many"], batch)
        one_loss, one_items, one_targets = assign_targets(base.one2one, raw["one2one"], batch)
        loss = (many_loss * base.o2m + one_loss * base.o2o) * batch_size
        return loss, one_items, {"one2many": many_targets, "one2one": one_targets}
    if type(base) is v8DetectionLoss:
        loss, items, targets = assign_targets(base, raw["one2many"], batch)
        return loss * batch_size, items, {"one2many": targets}
    raise TypeError(f"yolokd supports Detect models trained with v8DetectionLoss or E2ELoss, not {type(base).__name__}")


class DistillationCriterion:
    """Detection loss + KD terms for one student model instance (the training model, or the EMA at validation).

    Attributes:
        base: the student's own Ultralytics criterion (v8DetectionLoss or E2ELoss); ``update()`` reaches it.
        kd_factor: schedule multiplier of every KD term (1.0 at validation); at 0 the teacher is not run at all.
        nonfinite: (T,) bool, set on the device when a KD term was NaN/Inf since the trainer last checked.
    """

    def __init__(
        self, base: object, model: torch.nn.Module, distiller: Distiller, follow_o2m_decay: bool = True
    ) -> None:
        self.base = base
        self.follow_o2m_decay = follow_o2m_decay and isinstance(base, E2ELoss)
        branches = distiller.term_branches()
        self.one2many_terms = [name for name in distiller.term_names if branches[name] == "one2many"]
        self.adapter = adapter_for(model)
        self.distiller = distiller
        self.recorder = distiller.recorder_for(self.adapter)  # records inside recording() only
        self.kd_factor = 1.0
        self.nonfinite = torch.zeros(len(distiller.term_names), dtype=torch.bool, device=distiller.device)

    def __deepcopy__(self, memo: dict) -> object:
        """A copy of the student carries its plain Ultralytics criterion: the KD part belongs to this model only."""
        return copy.deepcopy(self.base, memo)

    def __reduce_ex__(self, protocol: Any) -> tuple:
        """Pickled (in a checkpoint of the student), this criterion is the student's plain Ultralytics criterion.

        ``operator.getitem((base,), 0)`` unpickles as ``base`` and names nothing of yolokd: Ultralytics alone loads it.
        """
        return operator.getitem, ((self.base,), 0)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record the student's stage outputs in the forwards run inside (a step, a validation, a balance batch).

        Forward hooks exist on the student only inside this context (none when no loss reads stage outputs).
        """
        with self.recorder.recording():
            yield

    def __call__(self, preds: dict | tuple, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        loss, items, terms = self._compute(preds, batch)
        batch_size = batch["img"].shape[0]
        if terms:
            stacked = torch.stack(list(terms.values()))
            self.nonfinite |= ~torch.isfinite(stacked)
            loss = loss.sum() + stacked.sum() * batch_size
        return loss, {**items, **{name: term.detach() for name, term in terms.items()}}

    def loss_parts(self, preds: dict | tuple, batch: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """For the balance step: (GT loss components x batch size by Ultralytics' names, KD terms by name)."""
        loss, items, terms = self._compute(preds, batch)
        return dict(zip(items, loss, strict=True)), terms

    @property
    def o2m_factor(self) -> float:
        """One2many KD follows E2ELoss' decaying one2many weight (0.8 -> 0.1): its current value over its first."""
        if not self.follow_o2m_decay:
            return 1.0
        return self.base.o2m / self.base.o2m_copy

    def _compute(self, preds: dict | tuple, batch: dict[str, Any]) -> tuple[Tensor, dict, dict[str, Tensor]]:
        raw = self.adapter.split_branches(preds)
        loss, items, targets = detection_loss_and_targets(self.base, raw, batch)
        terms = self._kd_terms(raw, batch["img"], targets)
        return loss, items, terms

    def _kd_terms(self, raw: dict[str, dict], images: Tensor, targets: dict[str, Targets]) -> dict[str, Tensor]:
        names = self.distiller.term_names
        if self.kd_factor == 0.0:
            zero = torch.zeros((), device=images.device)
            return dict.fromkeys(names, zero)
        branches = self.distiller.branches
        student_views = {b: self.adapter.build_view(raw[b], self.recorder.stages(b)) for b in branches}
        terms = self.distiller(student_views, images, targets)
        factors = dict.fromkeys(names, self.kd_factor)
        o2m_factor = self.o2m_factor
        if o2m_factor != 1.0:
            for name in self.one2many_terms:
                factors[name] *= o2m_factor
        return {name: terms[name] * factors[name] for name in names}

    def update(self) -> None:
        """Per-epoch update of the base criterion (E2ELoss decays its one2many weight)."""
        if hasattr(self.base, "update"):
            self.base.update()
