"""TensorRT engine build, sidecar check, parity and timing: run where tensorrt and a CUDA GPU are present."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_untrained_checkpoint

from yolokd.export import plan, stats

REASON = (
    "tensorrt is not installed"
    if importlib.util.find_spec("tensorrt") is None
    else "no CUDA GPU visible to torch"
    if not torch.cuda.is_available()
    else None
)
pytestmark = [pytest.mark.integration, pytest.mark.skipif(REASON is not None, reason=f"TensorRT tests: {REASON}")]
IMGSZ = 64


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A YOLOv8n (untrained, 8 classes) exported to an FP16 engine at 64 px with every check."""
    from yolokd.export.exporter import export_model

    names = {index: f"class{index}" for index in range(8)}
    checkpoint = save_untrained_checkpoint("yolov8n.yaml", names, tmp_path_factory.mktemp("trt") / "student.pt")
    return export_model(checkpoint, format="engine", half=True, imgsz=IMGSZ, parity_images=2)


def test_engine_plan_and_sidecar(engine):
    """The engine, its header-less plan and the sidecar of this GPU and TensorRT; checks pass at FP16."""
    import tensorrt as trt

    assert engine.report["passed"], engine.problems
    sidecar = json.loads(engine.files["sidecar"].read_text())
    assert sidecar["tensorrt_version"] == trt.__version__ and sidecar["precision"] == "fp16"
    assert sidecar["gpu_name"] == torch.cuda.get_device_name(0)
    assert sidecar["inputs"][0]["shape"] == [1, 3, IMGSZ, IMGSZ]
    raw = engine.files["plan"].read_bytes()
    assert trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(raw) is not None
    assert plan.split_engine(engine.path.read_bytes())[1] == raw


def test_tampered_sidecar_refuses_to_load(engine, tmp_path):
    """A sidecar saying another TensorRT version stops the runner with EngineMismatchError."""
    from yolokd.export.runners import open_runner

    copy = tmp_path / engine.path.name
    copy.write_bytes(engine.path.read_bytes())
    sidecar = json.loads(engine.files["sidecar"].read_text())
    plan.write_sidecar(plan.sidecar_path(copy), {**sidecar, "tensorrt_version": "0.0.1"})
    with pytest.raises(plan.EngineMismatchError, match=r"0\.0\.1"):
        open_runner(copy, device="0")


def test_engine_benchmark_times_gpu_compute(engine, tmp_path):
    """Benchmark of the .engine and the .plan: CUDA-event GPU time recorded, schema complete."""
    from yolokd.export.benchmark import run_benchmark

    models = f"{engine.path},{engine.files['plan']}"
    result = run_benchmark(
        model=models, imgsz=IMGSZ, device="0", warmup=0.2, runs=20, seconds=0.2, project=str(tmp_path), name="trt"
    )
    assert stats.schema_errors(result.report) == []
    for row in result.report["rows"]:
        assert row["status"] == "ok" and row["runtime"] == "tensorrt" and row["precision"] == "fp16"
        assert row["stages"]["gpu_compute"]["count"] == row["runs"] and row["memory"]["engine_device_mb"] >= 0


def test_jetson_runner_builds_and_benchmarks_on_this_gpu(engine, tmp_path):
    """deploy/jetson/run.py (no torch) builds an FP16 plan from the ONNX with a timing cache and benchmarks it."""
    onnx = tmp_path / "student.onnx"
    onnx.write_bytes(engine.path.with_suffix(".onnx").read_bytes())
    runner = Path(__file__).parents[2] / "deploy" / "jetson" / "run.py"
    build = [sys.executable, str(runner), "build", str(onnx), "--precision", "fp16", "--imgsz", "64", "64"]
    subprocess.run(build, check=True, capture_output=True, text=True)
    assert (tmp_path / "timing.cache").stat().st_size > 0 and (tmp_path / "student.trt.json").is_file()
    bench = [
        sys.executable,
        str(runner),
        "bench",
        str(tmp_path / "student.plan"),
        "--runs",
        "20",
        "--seconds",
        "0.2",
        "--warmup",
        "0.2",
        "--out",
        str(tmp_path / "report"),
    ]
    subprocess.run(bench, check=True, capture_output=True, text=True)
    report = json.loads((tmp_path / "report" / "benchmark.json").read_text())
    assert stats.schema_errors(report) == [] and report["rows"][0]["stages"]["gpu_compute"]["count"] >= 20
