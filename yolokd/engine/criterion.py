"""The student's criterion during distillation: Ultralytics' detection loss + every KD term, in one call.

Ultralytics calls ``model.loss(batch)`` -> ``model.criterion(preds, batch)`` right after the student's forward.
yolokd swaps ``model.criterion`` for :class:`DistillationCriterion`, a plain object (never an ``nn.Module``, so
nothing of it joins the student's parameters). It calls the student's own Ultralytics loss unchanged, captures the
label assignment that loss computed (so every KD loss uses the same one), runs the teacher, and returns all terms by
name so they reach the progress line and ``results.csv``.

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
from torch import Tensor, nn
from ultralytics.utils.loss import E2ELoss

from yolokd.engine.distiller import Distiller
from yolokd.heads import adapter_for
from yolokd.views import Targets, enclosing_boxes


def branch_losses(base: object) -> dict[str, Any]:
    """The per-branch Ultralytics losses inside the student's criterion: E2ELoss' one2many and one2one, else itself."""
    if isinstance(base, E2ELoss):
        return {"one2many": base.one2many, "one2one": base.one2one}
    return {"one2many": base}


class AssignmentHook:
    """Forward hook on one branch loss's assigner: the GT it was given and the assignment it returned, as Targets.

    Ultralytics' task-aligned assigners take ``(scores, boxes, anchor points, gt_labels (B, M, 1), gt_boxes (B, M, 4)
    xyxy pixels, gt_mask (B, M, 1))`` and return ``(labels, target_boxes (B, A, 4) xyxy pixels, target_scores,
    fg_mask (B, A), gt_index (B, A))``: read here, once. The target boxes are copied: the pose losses (v8PoseLoss,
    PoseLoss26) and v8OBBLoss divide the assigner's target boxes by the stride in place after this call, which would
    leave grid units in Targets. The rotated assigner (OBB) takes and returns xywhr boxes (B, M, 5) / (B, A, 5): they
    become ``gt_rboxes``/``target_rboxes``, and ``gt_boxes``/``target_boxes`` their enclosing xyxy boxes.
    """

    def __init__(self, captured: dict[str, list[Targets]], branch: str, image_size: Tensor) -> None:
        self.captured = captured
        self.branch = branch
        self.image_size = image_size

    def __call__(self, module: nn.Module, args: tuple, output: tuple) -> None:
        gt_labels, gt_boxes, gt_mask = args[3:6]
        _, target_boxes, _, fg_mask, gt_index = output
        target_boxes = target_boxes.clone()  # pixels, as the loss is about to rescale its own in place
        rotated = {}
        if gt_boxes.shape[-1] == 5:  # xywhr
            rotated = {"gt_rboxes": gt_boxes, "target_rboxes": target_boxes}
            gt_boxes, target_boxes = enclosing_boxes(gt_boxes), enclosing_boxes(target_boxes)
        targets = Targets(
            fg_mask=fg_mask.bool(),
            gt_index=gt_index,
            target_boxes=target_boxes,
            gt_boxes=gt_boxes,
            gt_labels=gt_labels.squeeze(-1).long(),
            gt_mask=gt_mask.squeeze(-1).bool(),
            image_size=self.image_size,
            **rotated,
        )
        self.captured.setdefault(self.branch, []).append(targets)


def student_loss_and_targets(base: object, preds: Any, batch: dict[str, Any]) -> tuple[Tensor, dict, dict]:
    """Call the student's own Ultralytics loss, unchanged, and capture the label assignment it computes per branch.

    The assignment is read from the loss's own assigner call (a forward hook that lives for this call only), so the
    GT part is exactly ``base(preds, batch)`` and KD losses see the very assignment that loss used.

    Returns:
        loss: ``base(preds, batch)[0]``, the gain-scaled loss vector x batch size, as Ultralytics returns it.
        items: ``base(preds, batch)[1]``, the detached loss items Ultralytics logs.
        targets: ``{branch: Targets}``.
    """
    images = batch["img"]
    image_size = torch.tensor(images.shape[2:], device=images.device, dtype=torch.float32)  # (H, W) pixels
    captured: dict[str, list[Targets]] = {}
    handles = []
    for branch, loss in branch_losses(base).items():
        assigner = getattr(loss, "assigner", None)
        if not isinstance(assigner, nn.Module):
            raise TypeError(f"{type(loss).__name__} has no assigner module: yolokd cannot read its label assignment")
        handles.append(assigner.register_forward_hook(AssignmentHook(captured, branch, image_size)))
    try:
        loss, items = base(preds, batch)
    finally:
        for handle in handles:
            handle.remove()
    for branch in branch_losses(base):
        calls = len(captured.get(branch, ()))
        if calls != 1:  # every supported Ultralytics loss assigns each branch once per call
            raise RuntimeError(f"{type(base).__name__} assigned its {branch} branch {calls} times, expected once")
    return loss, items, {branch: assigned for branch, (assigned,) in captured.items()}


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
        loss, items, targets = student_loss_and_targets(self.base, preds, batch)
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
