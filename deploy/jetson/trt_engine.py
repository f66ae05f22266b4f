"""Build a TensorRT plan from an ONNX on the device (FP32 / FP16 / INT8), and run it: TensorRT + NumPy only.

Written against the TensorRT 8.6 / 10.x Python API (JetPack 6.0: 8.6.2; JetPack 6.1/6.2: 10.3). INT8 uses
implicit quantization with an entropy calibrator (removed in TensorRT 11: build INT8 there with Ultralytics/ModelOpt).
A timing cache is read and written back, so rebuilding on the same device is fast; the INT8 calibration cache
(``<stem>.int8.cache``) lets a rebuild skip calibration.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tensorrt as trt
from cudart import DEVICE_TO_HOST, HOST_TO_DEVICE, CudaRuntime

LOGGER = trt.Logger(trt.Logger.WARNING)
NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


def numpy_dtype(trt_dtype) -> type:
    """TensorRT DataType -> NumPy dtype."""
    return NUMPY_DTYPES[str(trt_dtype).rsplit(".", 1)[-1]]


class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
    """Feeds letterboxed uint8 images (N, 3, h, w) from ``<stem>.calib.npy`` to TensorRT, one batch at a time."""

    def __init__(self, images: np.ndarray | None, batch: int, cache: Path, cuda: CudaRuntime):
        super().__init__()
        self.images, self.batch, self.cache, self.cuda, self.index = images, batch, cache, cuda, 0
        self.host = None if images is None else cuda.pinned((batch, *images.shape[1:]), np.float32)
        self.device = 0 if self.host is None else cuda.malloc(self.host.nbytes)
        self.stream = cuda.stream()

    def get_batch_size(self) -> int:
        return self.batch

    def get_batch(self, names):  # TensorRT passes the input names; there is one input
        if self.images is None or self.index + self.batch > len(self.images):
            return None
        self.host[:] = self.images[self.index : self.index + self.batch] / np.float32(255)
        self.cuda.copy(self.device, self.host.ctypes.data, self.host.nbytes, HOST_TO_DEVICE, self.stream)
        self.cuda.synchronize(self.stream)
        self.index += self.batch
        return [self.device]

    def read_calibration_cache(self):
        return self.cache.read_bytes() if self.images is None and self.cache.is_file() else None

    def write_calibration_cache(self, cache) -> None:
        self.cache.write_bytes(bytes(cache))


def build_plan(
    onnx: Path,
    precision: str,
    workspace_gib: float | None,
    batch: int,
    imgsz: tuple[int, int],
    dynamic: bool,
    calibration: Path | None,
    timing_cache: Path,
    calibration_cache: Path,
) -> tuple[bytes, dict]:
    """Parse the ONNX and build a serialized plan; returns (plan, build facts: seconds, timing cache hit...)."""
    if precision == "int8" and calibration is None and not calibration_cache.is_file():
        raise ValueError(
            f"int8 needs calibration images (--calib {onnx.stem}.calib.npy from `yolokd export "
            f"... target=tensorrt int8=true`) or an existing {calibration_cache.name}"
        )
    builder = trt.Builder(LOGGER)
    explicit = (
        0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    )
    network = builder.create_network(explicit)
    parser = trt.OnnxParser(network, LOGGER)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx}: TensorRT could not parse it: {errors}")
    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    image_input = network.get_input(0)
    shape = tuple(image_input.shape)
    if dynamic or shape[0] == -1:
        profile = builder.create_optimization_profile()
        height, width = shape[2] if shape[2] > 0 else imgsz[0], shape[3] if shape[3] > 0 else imgsz[1]
        profile.set_shape(image_input.name, (1, 3, height, width), (batch, 3, height, width), (batch, 3, height, width))
        config.add_optimization_profile(profile)
        if precision == "int8" and hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(profile)
    cuda = CudaRuntime()
    if precision in {"fp16", "int8"}:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        images = np.load(calibration) if calibration else None
        config.int8_calibrator = EntropyCalibrator(
            images, max(1, shape[0]) if shape[0] > 0 else batch, calibration_cache, cuda
        )
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT build failed; run with TRT logs (trtexec --onnx=... --verbose) for the reason")
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(plan), {"build_seconds": round(time.perf_counter() - started, 1), "timing_cache": str(timing_cache)}


class PlanRunner:
    """A deserialized plan with pinned host and device buffers on one stream; ``run(images)`` copies in, executes,
    copies out and returns the first output; ``gpu_ms`` is the CUDA-event time of the last execute."""

    def __init__(self, plan: bytes, batch: int, imgsz: tuple[int, int]):
        self.cuda = CudaRuntime()
        memory_before = self.cuda.memory_used()
        self.engine = trt.Runtime(LOGGER).deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        self.stream, self.start, self.end = self.cuda.stream(), self.cuda.event(), self.cuda.event()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name, self.output_names = inputs[0], [n for n in names if n not in inputs]
        self.context.set_input_shape(self.input_name, (batch, 3, *imgsz))
        self.host, self.device = {}, {}
        for name in names:
            shape = tuple(self.context.get_tensor_shape(name))
            self.host[name] = self.cuda.pinned(shape, numpy_dtype(self.engine.get_tensor_dtype(name)))
            self.device[name] = self.cuda.malloc(self.host[name].nbytes)
            self.context.set_tensor_address(name, self.device[name])
        self.gpu_ms = 0.0
        self.memory_mb = (self.cuda.memory_used() - memory_before) / 2**20

    @property
    def input(self) -> np.ndarray:
        """The pinned input array to preprocess into."""
        return self.host[self.input_name]

    def run(self) -> np.ndarray:
        """Execute on the current ``input``; returns the first output (host array, valid until the next run)."""
        name = self.input_name
        self.cuda.copy(
            self.device[name], self.host[name].ctypes.data, self.host[name].nbytes, HOST_TO_DEVICE, self.stream
        )
        self.cuda.record(self.start, self.stream)
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.cuda.record(self.end, self.stream)
        for output in self.output_names:
            self.cuda.copy(
                self.host[output].ctypes.data,
                self.device[output],
                self.host[output].nbytes,
                DEVICE_TO_HOST,
                self.stream,
            )
        self.cuda.synchronize(self.stream)
        self.gpu_ms = self.cuda.elapsed_ms(self.start, self.end)
        return self.host[self.output_names[0]]

    def io(self) -> dict[str, list]:
        """Inputs and outputs as {inputs: [{name, shape, dtype}], outputs: [...]} (the sidecar's fields)."""
        entries = {"inputs": [], "outputs": []}
        for name, array in self.host.items():
            side = "inputs" if name == self.input_name else "outputs"
            dtype = str(self.engine.get_tensor_dtype(name)).rsplit(".", 1)[-1].lower()
            entries[side].append({"name": name, "shape": list(array.shape), "dtype": dtype})
        return entries
