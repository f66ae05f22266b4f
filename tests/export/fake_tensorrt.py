"""Stand-ins for the ``tensorrt`` module of TensorRT 10.x and 11.x, enough to import and drive
``deploy/jetson/trt_engine.py`` and ``yolokd/export/trt_compat.py`` on a CPU.

The attribute sets follow the real Python bindings (read from the symbols of the ``tensorrt-cu12-bindings``
10.13.3.9 and ``tensorrt-cu13-bindings`` 11.4.0.106 wheels): 10.x has ``BuilderFlag.FP16``/``INT8``,
``IInt8EntropyCalibrator2``, ``IBuilderConfig.int8_calibrator``/``set_calibration_profile``,
``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` and ``ICudaEngine.device_memory_size``; 11.x has none of them and
keeps ``STRONGLY_TYPED``, ``device_memory_size_v2`` and ``execute_async_v3``. The builder records what it was asked.

The "ONNX" the fake parser reads is a JSON file: ``{"input": [1, 3, 64, 64], "layers": [["CONVOLUTION", "FLOAT"]]}``
(layer type, output data type), written by ``write_fake_onnx``.
"""

from __future__ import annotations

import json
import types
from enum import Enum
from pathlib import Path
from types import SimpleNamespace


class DataType(Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


class LayerType(Enum):
    CONVOLUTION = 0
    ACTIVATION = 1
    QUANTIZE = 2
    DEQUANTIZE = 3


def write_fake_onnx(path: Path, layers: list[tuple[str, str]], shape: tuple[int, ...] = (1, 3, 64, 64)) -> Path:
    """A fake ONNX: the input shape and (layer type, output dtype) pairs the fake parser turns into a network."""
    path.write_text(json.dumps({"input": list(shape), "layers": [list(layer) for layer in layers]}))
    return path


def fake_tensorrt(major: int) -> types.ModuleType:
    """A ``tensorrt`` stand-in with the attribute set of TensorRT ``major`` (10 or 11)."""
    weak = major <= 10
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.13.3.9" if weak else "11.4.0.106"
    trt.calls = []  # what the builder was asked to do, in order
    trt.DataType, trt.LayerType = DataType, LayerType
    trt.float32, trt.float16 = DataType.FLOAT, DataType.HALF
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE=0)
    trt.TensorIOMode = SimpleNamespace(INPUT=1, OUTPUT=2)
    flags = {"TF32": 0, "FP16": 1, "INT8": 2, "OBEY_PRECISION_CONSTRAINTS": 3} if weak else {"TF32": 0}
    trt.BuilderFlag = SimpleNamespace(**flags)
    creation = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if weak else {"STRONGLY_TYPED": 1}
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(**creation)

    class Logger:
        WARNING = 2

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    class Config:
        def __init__(self) -> None:
            self.flags: list[int] = []

        def set_flag(self, flag: int) -> None:
            self.flags.append(flag)
            trt.calls.append(("set_flag", flag))

        def set_memory_pool_limit(self, pool: int, size: int) -> None:
            trt.calls.append(("set_memory_pool_limit", size))

        def create_timing_cache(self, data: bytes) -> bytes:
            return data

        def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> None:
            pass

        def get_timing_cache(self):
            return SimpleNamespace(serialize=lambda: b"timing")

        def add_optimization_profile(self, profile) -> None:
            trt.calls.append(("add_optimization_profile",))

    if weak:
        Config.int8_calibrator = None

        def set_calibration_profile(self, profile) -> None:
            trt.calls.append(("set_calibration_profile",))

        Config.set_calibration_profile = set_calibration_profile

        class IInt8EntropyCalibrator2:
            def __init__(self) -> None:
                pass

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags, self.inputs, self.layers = flags, [], []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_layers(self) -> int:
            return len(self.layers)

        def get_input(self, index: int):
            return self.inputs[index]

        def get_layer(self, index: int):
            return self.layers[index]

    def layer(kind: str, dtype: str):
        output = SimpleNamespace(dtype=DataType[dtype])
        return SimpleNamespace(type=LayerType[kind], num_outputs=1, get_output=lambda index: output)

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            spec = json.loads(Path(path).read_text())
            self.network.inputs = [SimpleNamespace(name="images", shape=tuple(spec["input"]), dtype=DataType.FLOAT)]
            self.network.layers = [layer(kind, dtype) for kind, dtype in spec["layers"]]
            return True

    class Builder:
        def __init__(self, logger: Logger) -> None:
            pass

        def create_network(self, flags: int = 0) -> Network:
            trt.calls.append(("create_network", flags))
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self):
            return SimpleNamespace(set_shape=lambda *args: None)

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            calibrator = getattr(config, "int8_calibrator", None)
            trt.calls.append(("build", tuple(config.flags), type(calibrator).__name__ if calibrator else None))
            return b"fake plan"

    trt.Logger, trt.IBuilderConfig, trt.OnnxParser, trt.Builder = Logger, Config, OnnxParser, Builder
    return trt
