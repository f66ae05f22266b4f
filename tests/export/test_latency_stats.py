"""Latency statistics and the report schema shared by `yolokd benchmark` and deploy/jetson."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from yolokd.export import stats


def test_stats_match_numpy_on_skewed_samples():
    """Mean, sample std, min, p50/p90/p95/p99, max equal numpy's on a long-tailed latency sample."""
    samples = np.random.default_rng(0).lognormal(mean=2.0, sigma=0.4, size=257)
    summary = stats.latency_stats(samples, batch=4)
    expected = dict(
        zip(("p50_ms", "p90_ms", "p95_ms", "p99_ms"), np.percentile(samples, [50, 90, 95, 99]), strict=True)
    )
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-12)
    assert summary["mean_ms"] == pytest.approx(samples.mean())
    assert summary["std_ms"] == pytest.approx(samples.std(ddof=1))
    assert (summary["min_ms"], summary["max_ms"], summary["count"]) == (samples.min(), samples.max(), 257)
    assert summary["throughput_fps"] == pytest.approx(4 * 1000 / samples.mean())


def test_known_values():
    """Hand-computed: [10, 20, 30, 40] ms -> mean 25, p50 25, p90 37, std 12.91, 40 img/s at batch 1."""
    summary = stats.latency_stats([10, 20, 30, 40])
    assert (summary["mean_ms"], summary["p50_ms"], summary["p90_ms"]) == (25.0, 25.0, 37.0)
    assert summary["std_ms"] == pytest.approx(12.909944, abs=1e-6)
    assert summary["throughput_fps"] == 40.0


def test_empty_and_single_sample():
    """No samples -> None; one sample -> std 0 and every percentile equal to it."""
    assert stats.latency_stats([]) is None
    one = stats.latency_stats([7.5])
    assert one["std_ms"] == 0.0 and one["p99_ms"] == one["min_ms"] == 7.5


def test_non_finite_sample_is_named():
    """A NaN latency is an error naming its index."""
    with pytest.raises(ValueError, match=r"samples_ms\[2\]"):
        stats.latency_stats([1.0, 2.0, float("nan")])


def test_compute_efficiency_arithmetic():
    """8.7 GFLOPs x batch 2 in 10 ms on a 10 TFLOPS device = 1.74 TFLOPS achieved = 17.4 %; unknown peak -> None."""
    assert stats.compute_efficiency(8.7, 2, 0.010, 10.0) == pytest.approx(0.174)
    assert stats.compute_efficiency(8.7, 2, 0.010, None) is None


def test_row_report_schema_and_files(tmp_path):
    """make_row + make_report follow the schema; a missing key is reported; JSON/CSV/MD are written."""
    samples = {"preprocess": [1, 2], "inference": [5, 6], "postprocess": [1, 1], "end_to_end": [7, 9]}
    row = stats.make_row(
        samples,
        batch=1,
        warmup_runs=3,
        warmup_s=0.1,
        measure_s=0.02,
        model="m.onnx",
        format="onnx",
        runtime="onnxruntime",
        provider="CPUExecutionProvider",
        precision="fp32",
        imgsz=[64, 64],
    )
    assert row["stages"]["gpu_compute"] is None and row["throughput_fps"] == pytest.approx(125.0)
    skipped = stats.skipped_row("fixed batch", batch=8, model="m.onnx")
    report = stats.make_report([row, skipped], {"device": "cpu"}, tool="test")
    assert stats.schema_errors(report) == []
    broken = json.loads(json.dumps(report))
    del broken["rows"][0]["memory"]
    assert stats.schema_errors(broken) == ["rows[0].memory: missing"]
    paths = stats.write_report(report, tmp_path)
    with open(paths["csv"]) as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 2 and float(lines[0]["end_to_end_p50_ms"]) == 8.0 and lines[0]["imgsz"] == "64x64"
    assert "skipped: fixed batch" in paths["md"].read_text()


def test_unknown_stage_is_an_error():
    """A stage outside STAGES is refused with the valid ones listed."""
    with pytest.raises(ValueError, match="unknown stages"):
        stats.make_row({"decode": [1.0]}, batch=1, warmup_runs=0, warmup_s=0, measure_s=0)
