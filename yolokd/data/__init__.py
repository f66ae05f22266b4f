"""Datasets for yolokd: a deterministic synthetic YOLO detection set for the CPU demo and the tests."""

from yolokd.data.synthetic import CLASS_NAMES, make_synthetic_dataset

__all__ = ["CLASS_NAMES", "make_synthetic_dataset"]
