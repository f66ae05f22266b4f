"""TensorRT engine build, sidecar check, parity and timing: run where tensorrt and a CUDA GPU are present (marked
cuda; `pytest -m cuda` selects them, benchmarks/gpu_check.sh runs them)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
pytestmark = [
    pytest.mark.integration,
    pytest.mark.cuda,
    pytest.mark.skipif(REASON is not None, reason=f"TensorRT tests: {REASON}"),
]
IMGSZ = 64


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A YOLOv8n (untrained, 8 classes) exported to an FP16 engine at 64 px with every check; no device= given (it
    once became torch.device('cuda:None') after the engine was written)."""
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
    """deploy/jetson/run.py (no torch) builds a plan from the FP32 ONNX with a timing cache and benchmarks it: FP16
    where TensorRT has the FP16 builder flag (10.x), else (11.x) after refusing FP16 in one line, FP32."""
    import tensorrt as trt

    onnx = tmp_path / "student.onnx"
    onnx.write_bytes(engine.path.with_suffix(".onnx").read_bytes())
    runner = Path(__file__).parents[2] / "deploy" / "jetson" / "run.py"
    build = [sys.executable, str(runner), "build", str(onnx), "--imgsz", "64", "64", "--precision"]
    precision = "fp16" if hasattr(trt.BuilderFlag, "FP16") else "fp32"
    if precision == "fp32":
        refused = subprocess.run([*build, "fp16"], capture_output=True, text=True, check=False)
        assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr
        assert "modelopt.onnx.autocast" in refused.stderr and "TensorRT 10" in refused.stderr
    subprocess.run([*build, precision], check=True, capture_output=True, text=True)
    assert json.loads((tmp_path / "student.trt.json").read_text())["precision"] == precision
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


@pytest.fixture(scope="module")
def int8_engine(calibrated_teacher, synthetic_data):
    """A YOLOv8n with calibrated BatchNorm statistics exported to an INT8 engine (train-split calibration), checked
    on the val split: parity on matched detections and the mAP delta."""
    from yolokd.export.exporter import export_model

    checkpoint = calibrated_teacher("yolov8n.yaml")
    copy = checkpoint.with_name("int8_student.pt")
    copy.write_bytes(checkpoint.read_bytes())
    return export_model(copy, format="engine", int8=True, data=str(synthetic_data), imgsz=IMGSZ, parity_images=4)


def test_int8_engine_passes_its_checks(int8_engine):
    """INT8 engine: every check passes (matched detections within the INT8 tolerance, same graph as a plain model);
    the sidecar says int8."""
    assert int8_engine.report["passed"], int8_engine.problems
    assert json.loads(int8_engine.files["sidecar"].read_text())["precision"] == "int8"
    assert int8_engine.report["checks"]["plain"]["same_graph"]


def test_runner_gpu_time_matches_a_trtexec_style_loop(engine):
    """The runner's CUDA-event time (its own stream, events around the enqueue) is within 10% of a bare loop that
    enqueues the same engine between events on a fresh stream, as trtexec times GPU compute (median of 200)."""
    from yolokd.export.runners import open_runner

    runner = open_runner(engine.files["plan"], device="0")
    images = torch.rand(1, 3, IMGSZ, IMGSZ, device="cuda")
    for _ in range(50):
        runner(images)
    runner_ms = []
    for _ in range(200):
        runner(images)
        runner_ms.append(runner.gpu_ms())
    context, stream = runner.context, torch.cuda.Stream()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    buffers = {runner.input_name: images.to(runner._dtype(runner.input_name)).contiguous()}
    for name in runner.output_names:
        shape = tuple(context.get_tensor_shape(name))
        buffers[name] = torch.empty(shape, dtype=runner._dtype(name), device="cuda")
    for name, tensor in buffers.items():
        context.set_tensor_address(name, tensor.data_ptr())
    torch.cuda.synchronize()
    loop_ms = []
    for _ in range(250):
        start.record(stream)
        assert context.execute_async_v3(stream.cuda_stream)
        end.record(stream)
        end.synchronize()
        loop_ms.append(start.elapsed_time(end))
    runner_median, loop_median = float(np.median(runner_ms)), float(np.median(loop_ms[50:]))
    assert runner_median == pytest.approx(loop_median, rel=0.10, abs=0.02), (runner_median, loop_median)
