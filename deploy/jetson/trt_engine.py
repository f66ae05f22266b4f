"""Build a TensorRT plan from an ONNX on the device (FP32 / FP16 / INT8), and run it: TensorRT + NumPy only.

One code path for TensorRT 8.6 (JetPack 6.0), 10.x (JetPack 6.1/6.2: 10.3) and 11.x, through
``yolokd/export/trt_compat.py``, which reads what the ``tensorrt`` module offers instead of its version. Where
builder flags exist (<= 10), FP16/INT8 are flags and an FP32 ONNX is calibrated for INT8 with an entropy calibrator;
on TensorRT 11 (strongly typed only) the ONNX must already carry its precision (FP16 tensors, or Q/DQ nodes for
INT8), and other requests stop with a one-line error naming the fix. A Q/DQ ONNX builds INT8 without calibration on
both. A timing cache is read and written back, so rebuilding on the same device is fast; the INT8 calibration cache
(``<stem>.int8.cache``) lets a rebuild skip calibration.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import tensorrt as trt
from cudart import DEVICE_TO_HOST, HOST_TO_DEVICE, CudaRuntime
from vendor import vendored

compat = vendored("trt_compat")
LOGGER = trt.Logger(trt.Logger.WARNING)
NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


def numpy_dtype(trt_dtype) -> type:
    """TensorRT DataType -> NumPy dtype."""
    return NUMPY_DTYPES[str(trt_dtype).rsplit(".", 1)[-1]]


@functools.cache
def calibrator_class() -> type:
    """The entropy calibrator, defined on first use: its base ``IInt8EntropyCalibrator2`` is gone in TensorRT 11
    (``compat.calibrator_base`` then raises TensorRTFeatureError naming the fix)."""

    class EntropyCalibrator(compat.calibrator_base(trt)):
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

    return EntropyCalibrator


def parse_onnx(builder, onnx: Path, caps):
    """A network parsed from the ONNX (strongly typed where that is the only mode)."""
    network = builder.create_network(compat.network_flags(trt, caps))
    parser = trt.OnnxParser(network, LOGGER)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx}: TensorRT could not parse it: {errors}")
    return network, parser


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
    """Parse the ONNX and build a serialized plan; returns (plan, build facts: seconds, timing cache, typing).

    Raises:
        TensorRTFeatureError (a ValueError): this TensorRT cannot build ``precision`` from this ONNX; names the fix.
    """
    caps = compat.capabilities(trt)
    builder = trt.Builder(LOGGER)
    network, _parser = parse_onnx(builder, onnx, caps)  # the parser must outlive the build
    recipe = compat.precision_plan(caps, precision, compat.graph_precision(network, trt))
    if recipe.calibrate and calibration is None and not calibration_cache.is_file():
        raise ValueError(
            f"int8 needs calibration images (--calib {onnx.stem}.calib.npy from `yolokd export "
            f"... target=tensorrt int8=true`) or an existing {calibration_cache.name}"
        )
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
        if recipe.calibration_profile:
            config.set_calibration_profile(profile)
    compat.set_builder_flags(config, trt, recipe)
    if recipe.calibrate:
        images = np.load(calibration) if calibration else None
        calibration_batch = max(1, shape[0]) if shape[0] > 0 else batch
        config.int8_calibrator = calibrator_class()(images, calibration_batch, calibration_cache, CudaRuntime())
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT build failed; run with TRT logs (trtexec --onnx=... --verbose) for the reason")
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    facts = {"build_seconds": round(time.perf_counter() - started, 1), "timing_cache": str(timing_cache)}
    return bytes(plan), {**facts, "tensorrt_typing": recipe.typing}


class PlanRunner:
    """A deserialized plan with pinned host and device buffers on its own CUDA stream (created once, never the legacy
    default stream); ``run()`` copies in, executes between two CUDA events, copies out and returns the first output;
    ``gpu_ms`` is the CUDA-event time of the last execute."""

    def __init__(self, plan: bytes, batch: int, imgsz: tuple[int, int], device: int = 0):
        self.cuda = CudaRuntime()
        self.cuda.set_device(device)
        memory_before = self.cuda.memory_used()
        self.engine = trt.Runtime(LOGGER).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the plan (another TensorRT version?); rebuild it here")
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
        launched = self.context.execute_async_v3(self.stream)
        self.cuda.record(self.end, self.stream)
        if not launched:
            raise RuntimeError("TensorRT execute_async_v3 returned False: the enqueue failed (see TensorRT's error)")
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
