"""``benchmark.png``: the end-to-end latency distribution of every setting, and the batch sweep."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any


def _label(row: dict[str, Any]) -> str:
    return f"{Path(row['model']).name} {row['runtime']} {row['precision']}"


def plot_benchmark(report: dict[str, Any], path: Path) -> Path:
    """Left: end-to-end latency per iteration (box plot over the recorded samples) per setting; right: images/s
    and p50 latency per image against batch size, one line per model and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in report["rows"] if row["status"] == "ok"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), tight_layout=True)
    if rows:
        left.boxplot([row["samples_ms"]["end_to_end"] for row in rows], vert=False, showfliers=True)
        left.set_yticks(range(1, len(rows) + 1), [f"{_label(row)} b{row['batch']}" for row in rows], fontsize=7)
    left.set_xlabel("end-to-end latency per iteration (ms)")
    left.set_title("latency distribution")
    sweeps: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for row in rows:
        per_image = row["stages"]["end_to_end"]["p50_ms"] / row["batch"]
        sweeps[_label(row)].append((row["batch"], row["throughput_fps"], per_image))
    latency_axis = right.twinx()
    for label, points in sweeps.items():
        points.sort()
        batches = [point[0] for point in points]
        line = right.plot(batches, [point[1] for point in points], marker="o", label=label)[0]
        latency_axis.plot(batches, [point[2] for point in points], marker="x", ls="--", color=line.get_color())
    right.set_xlabel("batch")
    right.set_ylabel("images / s (solid)")
    latency_axis.set_ylabel("p50 ms per image (dashed)")
    right.set_title("batch sweep")
    if sweeps:
        right.legend(fontsize=7)
    fig.suptitle(f"{report['environment'].get('device')} — {report['created']}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
