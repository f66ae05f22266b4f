"""Latency statistics and the benchmark report schema, shared by ``yolokd benchmark`` and ``deploy/jetson``.

Only numpy and the standard library: ``deploy/jetson/run.py`` loads this file by path on a device that has TensorRT
and NumPy but no torch, so the host and the device reports are made by the same code and have the same fields.

Schema ``yolokd.benchmark/1``: a report is ``{schema, created, tool, environment, rows}``; each row is one setting
(model x precision x batch) with ``stages`` = ``{stage: stats | None}`` over the recorded ``samples_ms``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "yolokd.benchmark/1"
STAGES = ("preprocess", "inference", "postprocess", "end_to_end", "gpu_compute")
"""preprocess: letterbox + layout + normalise; inference: the runtime call with its copies; postprocess: NMS and box
rescaling; end_to_end: the three measured together; gpu_compute: CUDA-event time of the inference (GPU only)."""
STAT_KEYS = ("count", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput_fps")
ROW_KEYS = (
    "model",
    "format",
    "runtime",
    "provider",
    "precision",
    "imgsz",
    "batch",
    "status",
    "reason",
    "runs",
    "warmup_runs",
    "warmup_s",
    "measure_s",
    "stages",
    "throughput_fps",
    "memory",
    "gflops_per_image",
    "peak_tflops",
    "compute_efficiency",
    "power",
    "samples_ms",
)
ENVIRONMENT_KEYS = ("device", "device_kind", "host", "versions", "power_mode", "load_average")
REPORT_KEYS = ("schema", "created", "tool", "environment", "rows")
PERCENTILES = (50, 90, 95, 99)


def latency_stats(samples_ms: Sequence[float] | np.ndarray, batch: int = 1) -> dict[str, float] | None:
    """Summary of one stage's per-iteration latencies.

    Args:
        samples_ms (Sequence[float] | ndarray[N]): per-iteration latencies in milliseconds, each for ``batch`` images.
        batch (int): images per iteration, for the throughput.

    Returns:
        (dict | None): ``STAT_KEYS``: count, mean, std (sample, ddof=1; 0 for one sample), min, p50/p90/p95/p99
        (numpy's linear interpolation), max in ms, and throughput_fps = batch / mean; None for no samples.
    """
    samples = np.asarray(samples_ms, dtype=np.float64).reshape(-1)
    if samples.size == 0:
        return None
    if not np.isfinite(samples).all():
        bad = int(np.flatnonzero(~np.isfinite(samples))[0])
        raise ValueError(f"samples_ms[{bad}] = {samples[bad]}: latencies must be finite")
    p50, p90, p95, p99 = np.percentile(samples, PERCENTILES)
    mean = float(samples.mean())
    return {
        "count": int(samples.size),
        "mean_ms": mean,
        "std_ms": float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        "min_ms": float(samples.min()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(samples.max()),
        "throughput_fps": batch * 1000.0 / mean if mean > 0 else math.inf,
    }


def compute_efficiency(gflops_per_image: float | None, batch: int, seconds: float | None, peak_tflops: float | None):
    """Achieved / peak compute (0..1): a compute-roof-only roofline estimate (memory traffic is not modelled).

    Args:
        gflops_per_image (float | None): model FLOPs per image in GFLOPs (2 x multiply-accumulates) at this imgsz.
        batch (int): images per inference.
        seconds (float | None): one inference, seconds (GPU compute time where measured, else inference mean).
        peak_tflops (float | None): the device's dense peak at the run's precision, TFLOPS (TOPS for INT8).
    """
    if not gflops_per_image or not seconds or not peak_tflops:
        return None
    return gflops_per_image * batch / seconds / (peak_tflops * 1000.0)


def make_row(
    samples_ms: Mapping[str, Sequence[float]],
    *,
    batch: int,
    warmup_runs: int,
    warmup_s: float,
    measure_s: float,
    gflops_per_image: float | None = None,
    peak_tflops: float | None = None,
    memory: Mapping[str, Any] | None = None,
    power: Mapping[str, Any] | None = None,
    **setting: Any,
) -> dict[str, Any]:
    """One measured row: the setting (model, format, runtime, provider, precision, imgsz), stats of every stage.

    ``samples_ms`` maps stage names (``STAGES``) to per-iteration ms; a stage without samples gets ``None``.
    """
    unknown = set(samples_ms) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; stages are {STAGES}")
    stages = {stage: latency_stats(samples_ms.get(stage, ()), batch) for stage in STAGES}
    end_to_end = stages["end_to_end"]
    compute = stages["gpu_compute"] or stages["inference"]
    return {
        **{key: None for key in ROW_KEYS},
        **setting,
        "batch": batch,
        "status": "ok",
        "reason": None,
        "runs": end_to_end["count"] if end_to_end else 0,
        "warmup_runs": warmup_runs,
        "warmup_s": warmup_s,
        "measure_s": measure_s,
        "stages": stages,
        "throughput_fps": end_to_end["throughput_fps"] if end_to_end else None,
        "memory": dict(memory or {}),
        "gflops_per_image": gflops_per_image,
        "peak_tflops": peak_tflops,
        "compute_efficiency": compute_efficiency(
            gflops_per_image, batch, compute["mean_ms"] / 1000 if compute else None, peak_tflops
        ),
        "power": dict(power) if power else None,
        "samples_ms": {stage: [float(x) for x in values] for stage, values in samples_ms.items()},
    }


def skipped_row(reason: str, *, batch: int, **setting: Any) -> dict[str, Any]:
    """A row for a setting that cannot run here (e.g. FP16 PyTorch on a CPU), with the reason."""
    return {
        **{key: None for key in ROW_KEYS},
        **setting,
        "batch": batch,
        "status": "skipped",
        "reason": reason,
        "runs": 0,
        "stages": dict.fromkeys(STAGES),
        "memory": {},
        "samples_ms": {},
    }


def make_report(rows: Iterable[Mapping[str, Any]], environment: Mapping[str, Any], tool: str) -> dict[str, Any]:
    """The report: schema, creation time (UTC ISO 8601), the tool that measured it, environment, rows."""
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": tool,
        "environment": {**{key: None for key in ENVIRONMENT_KEYS}, **environment},
        "rows": [dict(row) for row in rows],
    }


def schema_errors(report: Mapping[str, Any]) -> list[str]:
    """Every missing field of a report, as ``path: missing``; an empty list means the report follows the schema."""
    errors = [f"{key}: missing" for key in REPORT_KEYS if key not in report]
    if report.get("schema") != SCHEMA:
        errors.append(f"schema: {report.get('schema')!r}, expected {SCHEMA!r}")
    errors += [f"environment.{key}: missing" for key in ENVIRONMENT_KEYS if key not in report.get("environment", {})]
    for index, row in enumerate(report.get("rows", [])):
        errors += [f"rows[{index}].{key}: missing" for key in ROW_KEYS if key not in row]
        for stage, stats in (row.get("stages") or {}).items():
            if stats is not None:
                errors += [f"rows[{index}].stages.{stage}.{key}: missing" for key in STAT_KEYS if key not in stats]
    return errors


def flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as one CSV line: setting columns, then ``<stage>_<stat>`` columns (samples left out)."""
    flat = {key: row.get(key) for key in ROW_KEYS if key not in {"stages", "memory", "power", "samples_ms", "imgsz"}}
    imgsz = row.get("imgsz")
    flat["imgsz"] = "x".join(str(side) for side in imgsz) if isinstance(imgsz, (list, tuple)) else imgsz
    for stage in STAGES:
        stats = (row.get("stages") or {}).get(stage) or {}
        for key in STAT_KEYS:
            flat[f"{stage}_{key}"] = stats.get(key)
    for key, value in (row.get("memory") or {}).items():
        flat[f"memory_{key}"] = value
    for key in ("mean_w", "mj_per_frame", "fps_per_w"):
        flat[f"power_{key}"] = (row.get("power") or {}).get(key)
    return flat


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of the rows: setting, end-to-end and per-stage p50, p90/p99, throughput, efficiency, power."""
    header = (
        "| model | runtime | precision | batch | e2e p50 ms | e2e p90 / p99 ms | pre p50 | infer p50 | post p50 "
        "| GPU ms | img/s | compute eff. | W | mJ/img |"
    )
    lines = [header, "|" + "---|" * 4 + "---:|" * 10]
    for row in rows:
        stages = row.get("stages") or {}
        p50 = {stage: (stages.get(stage) or {}).get("p50_ms") for stage in STAGES}
        e2e = stages.get("end_to_end") or {}
        power = row.get("power") or {}
        efficiency = row.get("compute_efficiency")
        setting = [Path(str(row.get("model"))).name, f"{row.get('runtime')} ({row.get('provider')})"]
        setting += [_cell(row.get("precision")), _cell(row.get("batch"))]
        if row.get("status") != "ok":
            lines.append("| " + " | ".join(setting) + f" | skipped: {row.get('reason')} |" + " |" * 9)
            continue
        cells = [p50["end_to_end"], f"{_cell(e2e.get('p90_ms'))} / {_cell(e2e.get('p99_ms'))}", p50["preprocess"]]
        cells += [p50["inference"], p50["postprocess"], p50["gpu_compute"], _cell(row.get("throughput_fps"), 1)]
        cells += [None if efficiency is None else f"{100 * efficiency:.1f} %", power.get("mean_w")]
        cells.append(power.get("mj_per_frame"))
        lines.append("| " + " | ".join(setting + [_cell(cell) for cell in cells]) + " |")
    return "\n".join(lines)


def environment_lines(environment: Mapping[str, Any]) -> list[str]:
    """The environment as Markdown bullet lines."""
    lines = [f"- device: {environment.get('device')} ({environment.get('device_kind')})"]
    lines.append(f"- host: {environment.get('host')}")
    versions = environment.get("versions") or {}
    lines.append("- versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    if environment.get("power_mode"):
        lines.append(f"- power mode: {environment.get('power_mode')}")
    clocks = environment.get("gpu_clocks")
    if clocks:
        lines.append(
            f"- GPU clocks at start: SM {clocks['sm_mhz']} / {clocks['sm_max_mhz']} MHz ({clocks['sm_state']}), "
            f"memory {clocks['memory_mhz']} / {clocks['memory_max_mhz']} MHz"
        )
    lines.append(f"- load average at start (1/5/15 min): {environment.get('load_average')}")
    return lines


def write_report(report: Mapping[str, Any], folder: str | Path, stem: str = "benchmark") -> dict[str, Path]:
    """Write ``<stem>.json`` (everything, samples included), ``<stem>.csv`` (one line per row), ``<stem>.md``."""
    errors = schema_errors(report)
    if errors:
        raise ValueError(f"report does not follow {SCHEMA}: {'; '.join(errors[:5])}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {suffix: folder / f"{stem}.{suffix}" for suffix in ("json", "csv", "md")}
    paths["json"].write_text(json.dumps(report, indent=1, default=str) + "\n")
    flat = [flat_row(row) for row in report["rows"]]
    columns = list(dict.fromkeys(key for row in flat for key in row))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
    text = [f"# Latency benchmark ({report['tool']}, {report['created']})", ""]
    text += environment_lines(report["environment"])
    text += ["", markdown_table(report["rows"]), ""]
    text.append(
        "Stages are per iteration of `batch` images (ms); img/s = batch / mean end-to-end latency; compute eff. = "
        "model FLOPs / (inference time x device dense peak), a compute-roof-only estimate."
    )
    paths["md"].write_text("\n".join(text) + "\n")
    return paths
