"""Head adapters, one file per family of dense heads; ``ADAPTERS`` is the index, ``adapter_for`` picks one.

A model is matched by the exact class of its head, so Ultralytics' task heads that subclass ``Detect``
(``Segment``, ``Pose``, ``OBB``...) are never read as plain detection heads.
"""

from __future__ import annotations

from torch import nn

from yolokd.heads.base import HeadAdapter, check_head_pair, head_of
from yolokd.heads.dense import RetinaNetHeadAdapter, SharedTowerHeadAdapter
from yolokd.heads.detect import DetectHeadAdapter
from yolokd.heads.obb import OBBHeadAdapter
from yolokd.heads.pose import PoseHeadAdapter
from yolokd.heads.recorder import StageRecorder
from yolokd.heads.segment import SegmentHeadAdapter

ADAPTERS: tuple[type[HeadAdapter], ...] = (
    DetectHeadAdapter,
    SegmentHeadAdapter,
    PoseHeadAdapter,
    OBBHeadAdapter,
    SharedTowerHeadAdapter,
    RetinaNetHeadAdapter,
)

# Ultralytics task names as they appear in head class names (YOLOESegment -> segment), most specific first.
TASK_NAMES = ("semantic", "segment", "pose", "obb", "classify", "depth")


class UnsupportedHeadError(ValueError):
    """The model's head is of a family or task yolokd cannot distil (yet)."""


def adapter_for(model: nn.Module) -> HeadAdapter:
    """The head adapter of ``model``, chosen by the exact class of its head.

    Raises:
        UnsupportedHeadError: one line naming the head, its task and what is supported.
    """
    head = head_of(model)
    for adapter in ADAPTERS:
        if adapter.handles(head):
            return adapter(model)
    name = type(head).__name__ if head is not None else f"no head ({type(model).__name__})"
    task = next((task for task in TASK_NAMES if task in name.lower()), None)
    if any(adapter.task == task for adapter in ADAPTERS):  # the task is served, this head of it is not (YOLOE's)
        what = f"{task} models with this head are not supported"
    else:
        what = f"{task} models are not supported" if task else "not supported"
    supported = "; ".join(
        f"{a.task} models with a {' or '.join(t.__name__ for t in a.head_types)} head ({a.models})" for a in ADAPTERS
    )
    raise UnsupportedHeadError(f"this model's head is {name}: {what}. yolokd distils {supported}")


__all__ = [
    "ADAPTERS",
    "DetectHeadAdapter",
    "HeadAdapter",
    "OBBHeadAdapter",
    "PoseHeadAdapter",
    "RetinaNetHeadAdapter",
    "SegmentHeadAdapter",
    "SharedTowerHeadAdapter",
    "StageRecorder",
    "UnsupportedHeadError",
    "adapter_for",
    "check_head_pair",
]
