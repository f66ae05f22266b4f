"""deploy/jetson's TensorRT layer without a GPU: trt_engine.py on stand-ins of TensorRT 10 and 11 (import, build
flags, refusals), and the run loop's stream, events and checked enqueue with a fake CUDA runtime."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fake_tensorrt import DataType, fake_tensorrt, write_fake_onnx

JETSON = Path(__file__).parents[2] / "deploy" / "jetson"
FP32_LAYERS = [("CONVOLUTION", "FLOAT"), ("ACTIVATION", "FLOAT")]
QDQ_LAYERS = [("QUANTIZE", "INT8"), ("DEQUANTIZE", "FLOAT"), ("CONVOLUTION", "HALF")]


def load_trt_engine(monkeypatch, major: int):
    """deploy/jetson/trt_engine.py imported afresh against a TensorRT ``major`` stand-in; (module, fake tensorrt)."""
    trt = fake_tensorrt(major)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.syspath_prepend(str(JETSON))
    spec = importlib.util.spec_from_file_location(f"trt_engine_{major}", JETSON / "trt_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, trt


class FakeCuda:
    """The CudaRuntime calls trt_engine makes, logged in order; stream handle 7 (not the legacy default stream 0)."""

    def __init__(self, log: list | None = None) -> None:
        self.log: list[tuple] = [] if log is None else log
        self.events = iter(range(101, 200))

    def set_device(self, index: int) -> None:
        self.log.append(("set_device", index))

    def memory_used(self) -> int:
        return 0

    def stream(self) -> int:
        return 7

    def event(self) -> int:
        return next(self.events)

    def pinned(self, shape, dtype) -> np.ndarray:
        return np.zeros(shape, dtype)

    def malloc(self, nbytes: int) -> int:
        return 4096

    def copy(self, destination, source, nbytes, kind, stream) -> None:
        self.log.append(("copy", kind, stream))

    def record(self, event: int, stream: int) -> None:
        self.log.append(("record", event, stream))

    def synchronize(self, stream: int) -> None:
        self.log.append(("synchronize", stream))

    def elapsed_ms(self, start: int, end: int) -> float:
        self.log.append(("elapsed", start, end))
        return 1.25


def build(module, tmp_path: Path, precision: str, layers, calibration: Path | None = None):
    onnx = write_fake_onnx(tmp_path / "model.onnx", layers)
    cache = tmp_path / "model.int8.cache"
    return module.build_plan(onnx, precision, 1, 1, (64, 64), False, calibration, tmp_path / "timing.cache", cache)


def test_trt_engine_imports_on_tensorrt_11(monkeypatch):
    """No IInt8EntropyCalibrator2 in TensorRT 11: the module still imports (the calibrator is made on first use)."""
    module, trt = load_trt_engine(monkeypatch, 11)
    assert not hasattr(trt, "IInt8EntropyCalibrator2") and callable(module.build_plan)


def test_tensorrt_11_int8_from_fp32_onnx_is_refused_in_one_line(monkeypatch, tmp_path):
    """TensorRT 11 + INT8 + FP32 ONNX: TensorRTFeatureError naming the Q/DQ export, before anything is built."""
    module, trt = load_trt_engine(monkeypatch, 11)
    calibration = tmp_path / "model.calib.npy"
    np.save(calibration, np.zeros((2, 3, 64, 64), np.uint8))
    with pytest.raises(module.compat.TensorRTFeatureError, match="no implicit INT8 calibration; export a Q/DQ ONNX"):
        build(module, tmp_path, "int8", FP32_LAYERS, calibration)
    assert not [call for call in trt.calls if call[0] == "build"]


def test_tensorrt_11_builds_a_qdq_onnx_strongly_typed(monkeypatch, tmp_path):
    """TensorRT 11 + Q/DQ ONNX: a STRONGLY_TYPED network, no builder flag, no calibrator."""
    module, trt = load_trt_engine(monkeypatch, 11)
    plan, facts = build(module, tmp_path, "int8", QDQ_LAYERS)
    assert plan == b"fake plan" and facts["tensorrt_typing"] == "strong"
    assert ("create_network", 1 << 1) in trt.calls and ("build", (), None) in trt.calls


def test_tensorrt_10_int8_sets_flags_and_the_entropy_calibrator(monkeypatch, tmp_path):
    """TensorRT 10 + INT8 + FP32 ONNX: FP16 and INT8 flags and an IInt8EntropyCalibrator2 subclass."""
    module, trt = load_trt_engine(monkeypatch, 10)
    monkeypatch.setattr(module, "CudaRuntime", FakeCuda)
    calibration = tmp_path / "model.calib.npy"
    np.save(calibration, np.zeros((2, 3, 64, 64), np.uint8))
    _plan, facts = build(module, tmp_path, "int8", FP32_LAYERS, calibration)
    flags = (trt.BuilderFlag.FP16, trt.BuilderFlag.INT8)
    assert ("build", flags, "EntropyCalibrator") in trt.calls and facts["tensorrt_typing"] == "weak"
    assert issubclass(module.calibrator_class(), trt.IInt8EntropyCalibrator2)


def test_tensorrt_10_fp16_sets_only_the_fp16_flag(monkeypatch, tmp_path):
    """TensorRT 10 + FP16: the FP16 flag, no calibrator."""
    module, trt = load_trt_engine(monkeypatch, 10)
    build(module, tmp_path, "fp16", FP32_LAYERS)
    assert ("build", (trt.BuilderFlag.FP16,), None) in trt.calls


def fake_engine(launched: bool, log: list):
    """An engine with one input and one output whose context logs its enqueue and returns ``launched``."""
    shapes = {"images": (1, 3, 64, 64), "output0": (1, 84, 84)}
    context = SimpleNamespace(
        set_input_shape=lambda name, shape: None,
        get_tensor_shape=lambda name: shapes[name],
        set_tensor_address=lambda name, address: None,
        execute_async_v3=lambda stream: log.append(("execute", stream)) or launched,
    )
    return SimpleNamespace(
        num_io_tensors=2,
        get_tensor_name=lambda index: list(shapes)[index],
        get_tensor_mode=lambda name: 1 if name == "images" else 2,
        get_tensor_dtype=lambda name: DataType.FLOAT,
        create_execution_context=lambda: context,
    )


def plan_runner(monkeypatch, launched: bool):
    """A PlanRunner on a fake engine and CUDA runtime that share one ordered log (``runner.cuda.log``)."""
    module, trt = load_trt_engine(monkeypatch, 10)
    log: list[tuple] = []
    engine = fake_engine(launched, log)
    trt.Runtime = lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda plan: engine)
    monkeypatch.setattr(module, "CudaRuntime", lambda: FakeCuda(log))
    return module.PlanRunner(b"plan", 1, (64, 64))


def test_plan_runner_times_the_enqueue_on_its_own_stream(monkeypatch):
    """Device set first; copy in, start event, execute, end event, copy out, sync, all on stream 7; gpu_ms from them."""
    runner = plan_runner(monkeypatch, launched=True)
    runner.run()
    steps = [step for step in runner.cuda.log if step[0] != "set_device"]
    assert runner.cuda.log[0] == ("set_device", 0)
    assert steps == [
        ("copy", 1, 7),
        ("record", 101, 7),
        ("execute", 7),
        ("record", 102, 7),
        ("copy", 2, 7),
        ("synchronize", 7),
        ("elapsed", 101, 102),
    ]
    assert runner.gpu_ms == 1.25


def test_plan_runner_raises_when_the_enqueue_fails(monkeypatch):
    """execute_async_v3 returning False stops the run with a clear error instead of returning stale outputs."""
    runner = plan_runner(monkeypatch, launched=False)
    with pytest.raises(RuntimeError, match="execute_async_v3 returned False"):
        runner.run()


def test_run_py_build_refusal_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    """`run.py build --precision int8` on TensorRT 11 with an FP32 ONNX: exit 2 and one line naming the fix."""
    _module, _trt = load_trt_engine(monkeypatch, 11)  # puts the TensorRT 11 stand-in in sys.modules
    monkeypatch.delitem(sys.modules, "trt_engine", raising=False)
    spec = importlib.util.spec_from_file_location("jetson_run_under_test", JETSON / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    onnx = write_fake_onnx(tmp_path / "model.onnx", FP32_LAYERS)
    calibration = tmp_path / "model.calib.npy"
    np.save(calibration, np.zeros((2, 3, 64, 64), np.uint8))
    code = run.main(["build", str(onnx), "--precision", "int8", "--calib", str(calibration)])
    monkeypatch.delitem(sys.modules, "trt_engine", raising=False)  # imported against the stand-in: do not keep it
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0
    assert error.startswith("run.py: error: TensorRT 11.4.0.106 has no implicit INT8 calibration")
