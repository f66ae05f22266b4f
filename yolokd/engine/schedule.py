"""The KD schedule (experiment section ``schedule:``): when the KD terms are on and how strongly, epoch by epoch."""

from __future__ import annotations

from dataclasses import dataclass

CLOSE_MOSAIC = "close_mosaic"


@dataclass
class Schedule:
    """When the KD terms are on and how strongly: one multiplier applied to every method's terms.

    Attributes:
        warmup_epochs: the KD weight ramps linearly from 0 to 1 over this many epochs (0 = full weight at once).
        off_last_epochs: KD is off for the last N epochs; ``close_mosaic`` follows Ultralytics' close_mosaic.
        follow_o2m_decay: on one2many/one2one heads (YOLOv10, YOLO26) Ultralytics decays the one2many loss weight
            from 0.8 to 0.1 over training; KD terms on the one2many branch are multiplied by the same decay
            (current / initial weight), so their share of that branch's loss stays what the balance set.
    """

    warmup_epochs: float = 0.0
    off_last_epochs: int | str = 0
    follow_o2m_decay: bool = True

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be >= 0")
        off = self.off_last_epochs
        if off != CLOSE_MOSAIC and (isinstance(off, str) or off < 0):
            raise ValueError(f"off_last_epochs={off!r} must be an integer >= 0 or '{CLOSE_MOSAIC}'")

    def off_epochs(self, close_mosaic: int) -> int:
        """Number of final epochs without KD."""
        return close_mosaic if self.off_last_epochs == CLOSE_MOSAIC else int(self.off_last_epochs)

    def factor(self, progress: float, total_epochs: int, close_mosaic: int) -> float:
        """KD weight multiplier at `progress` epochs elapsed (float; 0.5 = half-way through the first epoch)."""
        off = self.off_epochs(close_mosaic)
        if off > 0 and progress >= total_epochs - off:
            return 0.0
        if self.warmup_epochs == 0:
            return 1.0
        return min(1.0, progress / self.warmup_epochs)


__all__ = ["CLOSE_MOSAIC", "Schedule"]
