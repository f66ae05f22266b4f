"""TensorRT 8.6, 10.x and 11.x behind one small layer that asks the module what it can do, never its version.

TensorRT 11 removed weak typing: ``BuilderFlag.FP16`` / ``INT8`` / ``OBEY_PRECISION_CONSTRAINTS``, the implicit INT8
calibrators (``IInt8*``, ``IBuilderConfig.int8_calibrator``, ``set_calibration_profile``) and
``ICudaEngine.device_memory_size`` (use ``device_memory_size_v2``). Every network is strongly typed there: it builds
the precision the ONNX carries (FP16 tensors from NVIDIA ModelOpt AutoCast, INT8 from Q/DQ nodes). TensorRT 10 keeps
both modes. NVIDIA's migration guide: https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/
tensorrt-10x-to-11x-python-api-reference.html. The attribute sets were checked against the symbols of the real
``tensorrt-cu12-bindings`` 10.13.3.9 and ``tensorrt-cu13-bindings`` 11.4.0.106 wheels.

``precision_plan`` turns (capabilities, requested precision, what the parsed graph holds) into the builder flags and
calibration to use, or a ``TensorRTFeatureError`` whose one line names the fix. Standard library only and tensorrt
is passed in, never imported: ``deploy/jetson`` loads this file by path, and tests hand it fake modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRECISIONS = ("fp32", "fp16", "int8")
AUTOCAST_FIX = "python -m modelopt.onnx.autocast --onnx_path MODEL.onnx --output_path MODEL.fp16.onnx"
QDQ_FIX = "python -m modelopt.onnx.quantization --onnx_path MODEL.onnx --quantize_mode int8 --calibration_data ..."


class TensorRTFeatureError(ValueError):
    """A build this TensorRT cannot do (e.g. implicit INT8 calibration on TensorRT 11); the message names the fix."""


@dataclass(frozen=True)
class Capabilities:
    """What a ``tensorrt`` module offers, read from its attributes.

    Attributes:
        version (str): ``tensorrt.__version__`` (for messages only; no decision reads it).
        precision_flags (bool): ``BuilderFlag.FP16`` and ``INT8`` exist (weak typing: TensorRT <= 10).
        implicit_int8 (bool): ``IInt8EntropyCalibrator2`` and ``IBuilderConfig.int8_calibrator`` exist (<= 10).
        calibration_profile (bool): ``IBuilderConfig.set_calibration_profile`` exists (<= 10).
        explicit_batch_flag (bool): ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` exists (8.x needs it, 10.x
            ignores it, 11.x removed it).
        strongly_typed_flag (bool): ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists (10.x opt-in, 11.x
            accepted and always on).
    """

    version: str
    precision_flags: bool
    implicit_int8: bool
    calibration_profile: bool
    explicit_batch_flag: bool
    strongly_typed_flag: bool

    @property
    def strongly_typed_only(self) -> bool:
        """Every network is strongly typed (no precision builder flags): TensorRT 11."""
        return not self.precision_flags


@dataclass(frozen=True)
class GraphPrecision:
    """What a parsed network carries.

    Attributes:
        qdq (bool): Quantize/Dequantize layers (explicit INT8).
        half (bool): FP16 tensors (e.g. an ONNX converted by ModelOpt AutoCast or exported in FP16).
    """

    qdq: bool
    half: bool


@dataclass(frozen=True)
class PrecisionPlan:
    """How to build a requested precision with this TensorRT and this graph.

    Attributes:
        builder_flags (tuple[str, ...]): ``BuilderFlag`` members to set (empty on strongly typed TensorRT).
        calibrate (bool): implicit INT8 calibration with an ``IInt8EntropyCalibrator2``.
        calibration_profile (bool): pass the dynamic-shape profile to ``set_calibration_profile``.
        typing (str): "weak" (builder flags choose precisions) or "strong" (the graph's types are built).
    """

    builder_flags: tuple[str, ...]
    calibrate: bool
    calibration_profile: bool
    typing: str


def _has(owner: Any, *names: str) -> bool:
    return owner is not None and all(hasattr(owner, name) for name in names)


def capabilities(trt: Any) -> Capabilities:
    """Read the capabilities of a ``tensorrt`` module (or a stand-in with the same attributes)."""
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    config = getattr(trt, "IBuilderConfig", None)
    return Capabilities(
        version=str(getattr(trt, "__version__", "unknown")),
        precision_flags=_has(getattr(trt, "BuilderFlag", None), "FP16", "INT8"),
        implicit_int8=_has(trt, "IInt8EntropyCalibrator2") and _has(config, "int8_calibrator"),
        calibration_profile=_has(config, "set_calibration_profile"),
        explicit_batch_flag=_has(flags, "EXPLICIT_BATCH"),
        strongly_typed_flag=_has(flags, "STRONGLY_TYPED"),
    )


def network_flags(trt: Any, caps: Capabilities | None = None) -> int:
    """``Builder.create_network`` flags: EXPLICIT_BATCH where it exists (required on 8.x, ignored on 10.x), and
    STRONGLY_TYPED where precision flags are gone (11.x, where it is the only mode and accepted as a no-op)."""
    caps = caps or capabilities(trt)
    flags = 0
    if caps.explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if caps.strongly_typed_only and caps.strongly_typed_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def graph_precision(network: Any, trt: Any) -> GraphPrecision:
    """Scan a parsed ``INetworkDefinition``: Q/DQ layers, and FP16 inputs or layer outputs."""
    layer_types = getattr(trt, "LayerType", None)
    qdq_types = {getattr(layer_types, name) for name in ("QUANTIZE", "DEQUANTIZE") if _has(layer_types, name)}
    half = trt.DataType.HALF
    has_half = any(network.get_input(i).dtype == half for i in range(network.num_inputs))
    qdq = False
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        qdq = qdq or layer.type in qdq_types
        has_half = has_half or any(layer.get_output(j).dtype == half for j in range(layer.num_outputs))
        if qdq and has_half:
            break
    return GraphPrecision(qdq=qdq, half=has_half)


def precision_plan(caps: Capabilities, precision: str, graph: GraphPrecision) -> PrecisionPlan:
    """Builder flags and calibration for ``precision`` (fp32 / fp16 / int8) with this TensorRT and graph.

    Raises:
        TensorRTFeatureError: the request cannot be built here; the message names the fix.
    """
    if precision not in PRECISIONS:
        raise TensorRTFeatureError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if graph.qdq and precision != "int8":
        raise TensorRTFeatureError(
            f"precision {precision}: the ONNX holds Q/DQ nodes (explicit INT8 quantization); build it as int8"
        )
    if caps.strongly_typed_only:
        return _strongly_typed_plan(caps, precision, graph)
    if precision == "fp32":
        return PrecisionPlan((), False, False, "weak")
    if precision == "fp16":
        return PrecisionPlan(("FP16",), False, False, "weak")
    calibrate = not graph.qdq
    if calibrate and not caps.implicit_int8:
        raise TensorRTFeatureError(
            f"TensorRT {caps.version} has no implicit INT8 calibrator (IInt8EntropyCalibrator2); build INT8 from a "
            f"Q/DQ ONNX ({QDQ_FIX})"
        )
    return PrecisionPlan(("FP16", "INT8"), calibrate, calibrate and caps.calibration_profile, "weak")


def _strongly_typed_plan(caps: Capabilities, precision: str, graph: GraphPrecision) -> PrecisionPlan:
    """TensorRT 11: nothing to set; the graph must already carry the requested precision."""
    version = caps.version
    if precision == "int8" and not graph.qdq:
        raise TensorRTFeatureError(
            f"TensorRT {version} has no implicit INT8 calibration; export a Q/DQ ONNX with int8 (explicit "
            f"quantization, e.g. {QDQ_FIX}; `yolokd export format=engine int8=true` does this through Ultralytics) "
            f"or use TensorRT 10"
        )
    if precision == "fp16" and not graph.half:
        raise TensorRTFeatureError(
            f"TensorRT {version} builds strongly typed networks only (no BuilderFlag.FP16) and this ONNX is FP32; "
            f"convert it to FP16 first ({AUTOCAST_FIX}) or use TensorRT 10"
        )
    if precision == "fp32" and graph.half:
        raise TensorRTFeatureError(
            f"precision fp32: the ONNX carries FP16 tensors and TensorRT {version} builds the graph's own types; "
            f"build it as fp16 or export an FP32 ONNX"
        )
    return PrecisionPlan((), False, False, "strong")


def ultralytics_engine_problem(caps: Capabilities, precision: str, modelopt_installed: bool) -> str | None:
    """Why Ultralytics' ``format=engine`` export cannot build ``precision`` here, or None when it can.

    Ultralytics (8.4) builds FP16/INT8 on a strongly typed TensorRT by converting the ONNX with NVIDIA ModelOpt first
    (AutoCast, Q/DQ); without ModelOpt it would try to pip-install it in the middle of the export.
    """
    if caps.strongly_typed_only and precision in {"fp16", "int8"} and not modelopt_installed:
        return (
            f"TensorRT {caps.version} has no FP16/INT8 builder flags: Ultralytics builds {precision} engines from an "
            f"ONNX converted by NVIDIA ModelOpt, which is not installed; pip install 'nvidia-modelopt[onnx]>=0.44' "
            f"or use TensorRT 10"
        )
    return None


def set_builder_flags(config: Any, trt: Any, plan: PrecisionPlan) -> None:
    """Set the plan's builder flags on an ``IBuilderConfig``."""
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))


def calibrator_base(trt: Any) -> type:
    """``tensorrt.IInt8EntropyCalibrator2``, or TensorRTFeatureError where implicit calibration was removed."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise TensorRTFeatureError(
            f"TensorRT {getattr(trt, '__version__', 'unknown')} has no implicit INT8 calibration; export a Q/DQ ONNX "
            f"with int8 ({QDQ_FIX}) or use TensorRT 10"
        )
    return base


def engine_device_memory(engine: Any) -> int:
    """Device memory an execution context of ``engine`` needs, bytes: ``device_memory_size_v2`` (10.x, 11.x), else
    ``device_memory_size`` (8.6), else 0."""
    for name in ("device_memory_size_v2", "device_memory_size"):
        value = getattr(engine, name, None)
        if value is not None:
            return int(value)
    return 0
