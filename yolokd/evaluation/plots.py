"""Figures of ``yolokd compare`` (mAP vs epoch, KD terms vs epoch) and ``yolokd study`` (mean mAP with error bars)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from yolokd.evaluation.runs import MAP, NATIVE_KD_TERMS, RunRecord


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_map_curves(runs: Sequence[RunRecord], labels: Sequence[str], path: Path) -> Path:
    """mAP50-95 vs epoch, one line per run; a ``val=False`` run is one marker at its final epoch."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.4, 4.0), tight_layout=True)
    for run, label in zip(runs, labels, strict=True):
        if run.validated_every_epoch:
            axis.plot(run.epochs, run.column(MAP), marker=".", label=label)
        elif run.rows:
            axis.plot(run.epochs[-1:], [run.final()], marker="o", linestyle="none", label=f"{label} (final val only)")
    axis.set_xlabel("epoch")
    axis.set_ylabel("mAP50-95")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_kd_curves(runs: Sequence[RunRecord], labels: Sequence[str], path: Path) -> Path | None:
    """One panel per KD term (union over runs): train (solid) and val (dashed) per run; None when no run has KD.

    Ultralytics' native ``dis_loss`` has no val curve: its validation logs 0 (it skips KD there). A ``val=False`` run
    shows its one validated value, at the last epoch.
    """
    terms = list(dict.fromkeys(term for run in runs for term in run.kd_terms))
    if not terms:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.2), squeeze=False, tight_layout=True)
    for axis, term in zip(axes[0], terms, strict=True):
        for index, (run, label) in enumerate(zip(runs, labels, strict=True)):
            if term not in run.kd_terms:
                continue
            color = f"C{index % 10}"
            axis.plot(run.epochs, run.column(f"train/{term}"), color=color, marker=".", label=f"{label} train")
            val = run.column(f"val/{term}")
            if term in NATIVE_KD_TERMS or all(math.isnan(value) for value in val):
                continue
            if run.validated_every_epoch:
                axis.plot(run.epochs, val, color=color, linestyle="--", label=f"{label} val")
            else:  # val=False: only the last row was validated, earlier val cells are placeholders
                axis.plot(run.epochs[-1:], val[-1:], color=color, marker="x", linestyle="none", label=f"{label} val")
        axis.set_title(term)
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_study_bars(
    labels: Sequence[str],
    means: Sequence[float],
    stds: Sequence[float],
    path: Path,
    teacher: float | None = None,
    ylabel: str = "mAP50-95",
) -> Path:
    """Bar per row with ±1 std error bars (sample std over seeds) and the teacher as a dashed line."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(max(4.0, 1.3 * len(labels) + 1.5), 3.8), tight_layout=True)
    errors = [0.0 if math.isnan(std) else std for std in stds]
    axis.bar(range(len(labels)), means, yerr=errors, capsize=6, color=[f"C{i % 10}" for i in range(len(labels))])
    if teacher is not None and not math.isnan(teacher):
        axis.axhline(teacher, color="k", linestyle="--", linewidth=1, label=f"teacher {teacher:.4f}")
        axis.legend(fontsize=8)
    axis.set_xticks(range(len(labels)), labels, rotation=15, ha="right")
    axis.set_ylabel(f"{ylabel} (mean ± std over seeds)")
    axis.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
