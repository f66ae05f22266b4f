"""A finished training run read back from its folder: ``results.csv``, ``args.yaml`` and ``distill.yaml``.

Works for yolokd runs, plain Ultralytics runs (the baseline) and Ultralytics' native distillation
(``distill_model=``), whose KD term is its ``dis_loss`` column.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MAP = "metrics/mAP50-95(B)"
MAP50 = "metrics/mAP50(B)"
NATIVE_KD_TERMS = ("dis_loss",)  # Ultralytics' DistillationModel logs its feature KD term under this name


@dataclass
class RunRecord:
    """One run folder's per-epoch table and settings.

    Attributes:
        path: the run folder.
        rows: ``results.csv`` rows (keys stripped, values float; NaN where a cell is empty).
        args: ``args.yaml`` (the Ultralytics train arguments), empty when missing.
        methods: the yolokd losses of ``distill.yaml``; ``["ultralytics distill_model"]`` for a native run.
    """

    path: Path
    rows: list[dict[str, float]]
    args: dict[str, Any]
    methods: list[str]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method_label(self) -> str:
        """``bckd+mimic``, ``ultralytics distill_model`` or ``none``."""
        return "+".join(self.methods) or "none"

    @property
    def epochs(self) -> list[int]:
        return [int(row["epoch"]) for row in self.rows]

    @property
    def validated_every_epoch(self) -> bool:
        """False for ``val=False`` runs: Ultralytics then validates the final epoch only (earlier rows are stale)."""
        return bool(self.args.get("val", True))

    @property
    def kd_terms(self) -> list[str]:
        """KD term names: ``train/`` columns that are not Ultralytics' own ``*_loss`` terms, plus ``dis_loss``."""
        columns = [
            key.removeprefix("train/") for key in (self.rows[0] if self.rows else {}) if key.startswith("train/")
        ]
        return [name for name in columns if not name.endswith("_loss") or name in NATIVE_KD_TERMS]

    def column(self, name: str) -> list[float]:
        """One column over epochs (NaN where the run has no such column)."""
        return [row.get(name, math.nan) for row in self.rows]

    def final(self, metric: str = MAP) -> float:
        """`metric` at the last epoch (the weights in ``last.pt``)."""
        return self.rows[-1].get(metric, math.nan) if self.rows else math.nan

    def best(self, metric: str = MAP) -> tuple[float, int]:
        """Highest validated `metric` and its epoch (Ultralytics' fitness is mAP50-95, so this is ``best.pt``)."""
        candidates = self.rows if self.validated_every_epoch else self.rows[-1:]
        scored = [(row.get(metric, math.nan), int(row["epoch"])) for row in candidates]
        scored = [item for item in scored if not math.isnan(item[0])]
        return max(scored, key=lambda item: item[0]) if scored else (math.nan, 0)


def read_run(path: str | Path) -> RunRecord:
    """Read a run folder; raise FileNotFoundError naming the folder when it has no ``results.csv``."""
    folder = Path(path)
    results = folder / "results.csv"
    if not results.is_file():
        raise FileNotFoundError(f"{folder}: not a finished run (no results.csv in it)")
    with open(results) as file:
        rows = [{key.strip(): _number(value) for key, value in row.items() if key} for row in csv.DictReader(file)]
    args = _read_yaml(folder / "args.yaml")
    distill = _read_yaml(folder / "distill.yaml").get("distill") or []
    methods = [str(entry.get("loss")) for entry in distill if isinstance(entry, dict)]
    if not methods and args.get("distill_model"):
        methods = ["ultralytics distill_model"]
    return RunRecord(path=folder, rows=rows, args=args, methods=methods)


def _number(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    content = yaml.safe_load(path.read_text())
    return content if isinstance(content, dict) else {}
