"""yolokd: knowledge distillation for Ultralytics YOLO detectors, and their export to edge GPUs."""

__version__ = "0.1.0"
