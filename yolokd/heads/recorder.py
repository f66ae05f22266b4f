"""Recording a head's stage outputs with forward hooks, only inside a step.

In the style of mmrazor's recorders (a context that records, hooks that it removes) and Ultralytics' picklable
``FeatureHook`` (a small class, not a closure): :meth:`StageRecorder.recording` registers the hooks, the forward(s)
inside it record, and leaving it removes every handle and drops what was recorded. Outside a recording a model
carries no yolokd hook, so Ultralytics may deep-copy or pickle it (EMA, checkpoints, NaN recovery) as if yolokd were
not there. A copy taken during a recording still works: its hooks come along but record nothing, and recorded
tensors are never copied.

Per level even for heads that share one tower across levels: a hook on a per-level module stores its output under
its level; a hook on a shared module stores one output per call, in call order (the head runs levels P3 first). A
pre-hook on the head empties the record when a forward starts, so every forward records afresh.

Pre-activations (``box_preact``/``cls_preact``: a stage's BN or GroupNorm output) are only kept if the activation
after them is out-of-place. Ultralytics' ``load_checkpoint`` (how a teacher is loaded) makes every SiLU and ReLU
in-place, which silently overwrote a recorded pre-activation with its activation (measured: the recorded minimum was
SiLU's, -0.278), so a recorder of pre-activations turns the head's in-place activations out-of-place
(:func:`keep_preactivations`); numerics are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from yolokd.heads.base import HeadAdapter
from yolokd.views import PREACTIVATION

StageKey = tuple[str, str, int]  # (branch, part, stage)


class FeatureStore(dict):
    """Recorded outputs, ``{(branch, part, stage): {level: Tensor}}``, plus whether hooks may write to it.

    Copies and unpickled stores are empty and inactive: recorded tensors belong to one forward of one model (and
    non-leaf tensors cannot be deep-copied), so a model copied mid-step records nothing into its own store.
    """

    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def __deepcopy__(self, memo: dict) -> FeatureStore:
        return type(self)()

    def __reduce__(self) -> tuple:
        return type(self), ()


class StageHook:
    """Picklable forward hook: stores a module's output in ``store[key]`` under its level (or the next level)."""

    def __init__(self, store: FeatureStore, key: StageKey, level: int | None) -> None:
        self.store = store
        self.key = key
        self.level = level  # None: a module shared by every level, called once per level in level order

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if self.store.active:
            outputs = self.store.setdefault(self.key, {})
            outputs[len(outputs) if self.level is None else self.level] = output


class ForwardStart:
    """Picklable forward pre-hook on the head: a new forward starts with an empty record."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        if self.store.active:
            self.store.clear()


def keep_preactivations(module: nn.Module) -> int:
    """Make every in-place activation inside ``module`` out-of-place, so tensors recorded before it keep their values;
    returns how many were changed."""
    changed = 0
    for child in module.modules():
        if getattr(child, "inplace", False) is True and not list(child.children()):
            child.inplace = False
            changed += 1
    return changed


class StageRecorder:
    """Records the stage outputs of some branches and parts of one model's head, inside :meth:`recording` only.

    Parts are ``box``/``cls`` (stage outputs, post-activation) and ``box_preact``/``cls_preact`` (each stage's
    pre-activation); which module holds each point is the adapter's business (``HeadAdapter.stage_modules``).
    With no parts the recorder records nothing and :meth:`stages` is always empty.
    """

    def __init__(self, adapter: HeadAdapter, branches: tuple[str, ...], parts: tuple[str, ...]) -> None:
        self.adapter = adapter
        self.branches = branches if parts else ()
        self.parts = parts
        if any(part.endswith(PREACTIVATION) for part in parts):  # once, not per recorded forward
            keep_preactivations(adapter.head)
        self.store = FeatureStore()
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def active(self) -> bool:
        """True inside :meth:`recording` (between :meth:`start` and :meth:`stop`)."""
        return self.store.active

    def start(self) -> None:
        """Register the hooks and record every forward from now on (idempotent); :meth:`stop` ends it."""
        if self.active:
            return
        if self.parts:
            self.handles.append(self.adapter.head.register_forward_pre_hook(ForwardStart(self.store)))
        for branch in self.branches:
            for part in self.parts:
                for stage in range(self.adapter.spec.num_stages):
                    self._hook_stage((branch, part, stage))
        self.store.clear()
        self.store.active = True

    def _hook_stage(self, key: StageKey) -> None:
        levels = self.adapter.spec.num_levels
        modules = self.adapter.stage_modules(*key)
        if len(modules) not in {1, levels}:
            raise ValueError(f"{type(self.adapter).__name__} gave {len(modules)} modules for {key} on {levels} levels")
        shared = len(modules) == 1 and levels > 1
        for level, module in enumerate(modules):
            self.handles.append(module.register_forward_hook(StageHook(self.store, key, None if shared else level)))

    def stop(self) -> None:
        """Remove every hook and drop what was recorded (idempotent)."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.store.clear()
        self.store.active = False

    @contextmanager
    def recording(self) -> Iterator[StageRecorder]:
        """Record the forwards run inside; an enclosing recording of the same recorder is left running."""
        if self.active:
            yield self
            return
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def stages(self, branch: str) -> dict[str, list[list[Tensor]]]:
        """Outputs of one branch recorded by the last forward: ``{part: [stage][level] -> (B, D, H_l, W_l)}``.

        Empty for a branch this recorder does not record: a run may mix a stage-reading loss on one branch with a
        loss that reads no stages on the other (e.g. CrossKD on one2many + BCKD on one2one).
        """
        if branch not in self.branches:
            return {}
        spec = self.adapter.spec
        try:
            return {
                part: [
                    [self.store[(branch, part, stage)][level] for level in range(spec.num_levels)]
                    for stage in range(spec.num_stages)
                ]
                for part in self.parts
            }
        except KeyError:
            raise RuntimeError(
                f"no {branch} stage outputs {list(self.parts)} were recorded: run the model's forward inside "
                "recording() (DistillationCriterion.recording() for a student)"
            ) from None
