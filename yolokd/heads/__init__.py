"""Head adapters: the one place that knows a dense head's internals (Ultralytics ``Detect`` family today)."""

from yolokd.heads.detect import DetectHeadAdapter, HeadSpec, check_head_pair

__all__ = ["DetectHeadAdapter", "HeadSpec", "check_head_pair"]
