"""A figure of every KD term per epoch (train and val), beside Ultralytics' results.png.

Ultralytics' ``results.png`` only picks columns whose name contains "loss"; KD terms get their own figure.
"""

from __future__ import annotations

import csv
from pathlib import Path


def plot_kd_terms(results_csv: Path, term_names: tuple[str, ...]) -> Path | None:
    """Write ``kd_terms.png`` next to ``results.csv``: one panel per term, train and val curves."""
    if not term_names or not results_csv.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(results_csv) as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    if not rows:
        return None
    epochs = [float(row["epoch"]) for row in rows]
    fig, axes = plt.subplots(1, len(term_names), figsize=(4 * len(term_names), 3.2), squeeze=False, tight_layout=True)
    for axis, name in zip(axes[0], term_names, strict=True):
        for split in ("train", "val"):
            column = f"{split}/{name}"
            if column in rows[0]:
                axis.plot(epochs, [float(row[column]) for row in rows], marker=".", label=split)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.legend()
    path = results_csv.parent / "kd_terms.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
