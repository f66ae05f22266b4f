"""A training's augmentation stream from its seed alone, whatever the process ran before it.

Ultralytics seeds Python's and numpy's global generators once, at the top of its trainer's ``__init__``; its
augmentations (and Albumentations', whose own generators it re-seeds from Python's on their first call) then draw
from them. Anything that draws in between shifts every augmentation of the run. One such draw happens in the first
trainer of every process and in no later one: ``add_integration_callbacks`` imports ``ray.tune`` when Ray is
installed, which imports ``rich``, whose ``rich.style`` calls ``random.getrandbits`` at import. So the first run of a
process trained on other augmentations than the same run started second, and a study that runs several trainings per
worker process paired each KD run with a baseline whose data differed by where it fell in the queue (measured on
the from-scratch evidence baseline: seed 0 gave 0.1797 as a process's first run and 0.2519 as a later one, seed 1
0.1848 and 0.1458; README Results).

Re-seeding Python's generator exactly as Ultralytics does, right before the training data pipeline is built, makes
the stream a function of ``seed`` only. In a process that has already made those imports nothing draws from it in
between, so the re-seed changes nothing there: the baseline stays bit for bit Ultralytics' own training
(``tests/integration/test_kd_identity.py``) and every run measured in such a process keeps its result. numpy's
generator is left alone: nothing draws from it only in a process's first trainer (its state at the first epoch is
the same in a first and a later one, measured), and leaving it keeps those runs bit for bit as they were. torch's
is left alone too (the student's initialisation is already drawn; the shuffle has its own seeded generator).
"""

from __future__ import annotations

import random

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import RANK


class SeededDataMixin:
    """Re-seed Python's generator before the training set's loader is built (put it before an Ultralytics
    trainer); the seed is Ultralytics' own, ``seed + 1 + RANK``."""

    def get_dataloader(self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        if mode == "train":
            random.seed(self.args.seed + 1 + RANK)  # as Ultralytics' init_seeds does
        return super().get_dataloader(dataset_path, batch_size, rank, mode)


class SeededDetectionTrainer(SeededDataMixin, DetectionTrainer):
    """Ultralytics' ``DetectionTrainer`` with the re-seed: ``yolokd study``'s native KD row, paired like the rest."""
