"""``yolokd compare RUN_DIR... [baseline=DIR] [teacher=DIR]``: a table and figures over finished runs.

Gain and gap use each run's *final* mAP50-95 (the last epoch: no checkpoint picked on the validation split, which
would flatter every run); the best epoch is shown beside it. Gap closed = (run - baseline) / (teacher - baseline),
left blank when the teacher is not better than the baseline. Writes ``compare.md``, ``compare.json``,
``compare_map.png`` (mAP50-95 vs epoch) and ``compare_kd_terms.png`` (every KD term, train and val, per run).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from yolokd.evaluation.plots import plot_kd_curves, plot_map_curves
from yolokd.evaluation.runs import MAP50, RunRecord, read_run


@dataclass
class CompareRow:
    """One run of the comparison table (mAPs in [0, 1]; gain and gap None where they do not apply)."""

    label: str
    role: str
    methods: str
    epochs: int
    final_map: float
    final_map50: float
    best_map: float
    best_epoch: int
    gain: float | None
    gap_closed: float | None
    path: str


@dataclass
class Comparison:
    """The table rows and the files written."""

    rows: list[CompareRow]
    files: dict[str, Path] = field(default_factory=dict)

    def markdown(self) -> str:
        """The table, the rules behind its columns and links to the figures."""
        lines = [
            "| run | role | methods | epochs | final mAP50-95 | final mAP50 | best mAP50-95 (epoch) | gain vs baseline "
            "| gap closed |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows:
            gain = "" if row.gain is None else f"{row.gain:+.4f}"
            gap = "" if row.gap_closed is None or math.isnan(row.gap_closed) else f"{row.gap_closed:.1%}"
            lines.append(
                f"| {row.label} | {row.role} | {row.methods} | {row.epochs} | {row.final_map:.4f} | "
                f"{row.final_map50:.4f} | {row.best_map:.4f} ({row.best_epoch}) | {gain} | {gap} |"
            )
        lines += [
            "",
            "Gain and gap closed use the final epoch's mAP50-95; gap closed = (run - baseline) / (teacher - baseline).",
        ]
        lines += [f"\n![{name}]({path.name})" for name, path in self.files.items() if path.suffix == ".png"]
        return "\n".join(lines) + "\n"


def _labels(runs: Sequence[RunRecord]) -> list[str]:
    """Folder names, or ``parent/name`` where two runs share a folder name (``seed0/bckd``, ``seed1/bckd``)."""
    counts = Counter(run.name for run in runs)
    return [run.name if counts[run.name] == 1 else f"{run.path.parent.name}/{run.name}" for run in runs]


def _ordered_paths(
    run_dirs: Sequence[str | Path], baseline: str | Path | None, teacher: str | Path | None
) -> list[Path]:
    """Teacher, baseline, then the runs in the order given, each folder once."""
    paths: list[Path] = []
    for path in (teacher, baseline, *run_dirs):
        if path is not None and Path(path).resolve() not in {known.resolve() for known in paths}:
            paths.append(Path(path))
    return paths


def compare_runs(
    run_dirs: Sequence[str | Path],
    baseline: str | Path | None = None,
    teacher: str | Path | None = None,
    out: str | Path = "runs/compare",
) -> Comparison:
    """Read the runs, build the table, write the Markdown, JSON and PNG files under `out`.

    Args:
        run_dirs: finished run folders (with ``results.csv``); the baseline may be one of them.
        baseline: the run without distillation the gains are measured against.
        teacher: the teacher's own training run, for the share of the teacher-student gap closed.
        out: output folder.
    """
    paths = _ordered_paths(run_dirs, baseline, teacher)
    if not paths:
        raise ValueError("compare needs at least one run folder: yolokd compare RUN_DIR... [baseline=DIR]")
    runs = [read_run(path) for path in paths]
    roles = {Path(path).resolve(): role for role, path in (("teacher", teacher), ("baseline", baseline)) if path}
    base_run = next((run for run in runs if roles.get(run.path.resolve()) == "baseline"), None)
    teacher_run = next((run for run in runs if roles.get(run.path.resolve()) == "teacher"), None)
    base_map = base_run.final() if base_run else None
    gap = teacher_run.final() - base_map if teacher_run and base_map is not None else None
    rows = []
    for run, label in zip(runs, _labels(runs), strict=True):
        role = roles.get(run.path.resolve(), "student")
        gain = run.final() - base_map if base_map is not None and role == "student" else None
        gap_closed = None
        if gain is not None and gap is not None:
            gap_closed = gain / gap if gap > 0 else math.nan
        best_map, best_epoch = run.best()
        rows.append(
            CompareRow(label, role, run.method_label, len(run.rows), run.final(), run.final(MAP50), best_map,
                       best_epoch, gain, gap_closed, str(run.path))
        )  # fmt: skip
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    comparison = Comparison(rows)
    labels = [row.label for row in rows]
    comparison.files["map_vs_epoch"] = plot_map_curves(runs, labels, folder / "compare_map.png")
    kd_plot = plot_kd_curves(runs, labels, folder / "compare_kd_terms.png")
    if kd_plot is not None:
        comparison.files["kd_terms"] = kd_plot
    comparison.files["markdown"] = folder / "compare.md"
    comparison.files["json"] = folder / "compare.json"
    comparison.files["markdown"].write_text(comparison.markdown())
    payload = {"rows": [_json_safe(asdict(row)) for row in rows], "metric": "metrics/mAP50-95(B), final epoch"}
    comparison.files["json"].write_text(json.dumps(payload, indent=2) + "\n")
    return comparison


def _json_safe(row: dict) -> dict:
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}
