"""The TensorRT layer on stand-ins of the 10.x and 11.x modules: capabilities read from attributes, the builder
flags and calibration chosen per precision and graph, and refusals that name the fix."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fake_tensorrt import DataType, LayerType, fake_tensorrt

from yolokd.export import trt_compat

FP32_GRAPH = trt_compat.GraphPrecision(qdq=False, half=False)
FP16_GRAPH = trt_compat.GraphPrecision(qdq=False, half=True)
QDQ_GRAPH = trt_compat.GraphPrecision(qdq=True, half=True)


def test_capabilities_of_tensorrt_10_and_11():
    """10.x: precision flags, implicit INT8, calibration profile, EXPLICIT_BATCH; 11.x: strongly typed only."""
    ten, eleven = trt_compat.capabilities(fake_tensorrt(10)), trt_compat.capabilities(fake_tensorrt(11))
    assert (ten.precision_flags, ten.implicit_int8, ten.calibration_profile) == (True, True, True)
    assert ten.explicit_batch_flag and ten.strongly_typed_flag and not ten.strongly_typed_only
    assert (eleven.precision_flags, eleven.implicit_int8, eleven.calibration_profile) == (False, False, False)
    assert not eleven.explicit_batch_flag and eleven.strongly_typed_flag and eleven.strongly_typed_only


def test_capabilities_ignore_the_version_string():
    """A module that says 11.x but still has the 10.x attributes is treated as what it can do."""
    trt = fake_tensorrt(10)
    trt.__version__ = "11.0.0"
    assert trt_compat.capabilities(trt).implicit_int8


def test_network_flags():
    """10.x: EXPLICIT_BATCH (ignored there, required on 8.x); 11.x: STRONGLY_TYPED (its only mode)."""
    assert trt_compat.network_flags(fake_tensorrt(10)) == 1 << 0
    assert trt_compat.network_flags(fake_tensorrt(11)) == 1 << 1


@pytest.mark.parametrize(
    ("precision", "graph", "flags", "calibrate"),
    [
        ("fp32", FP32_GRAPH, (), False),
        ("fp16", FP32_GRAPH, ("FP16",), False),
        ("int8", FP32_GRAPH, ("FP16", "INT8"), True),
        ("int8", QDQ_GRAPH, ("FP16", "INT8"), False),
    ],
)
def test_tensorrt_10_uses_builder_flags(precision, graph, flags, calibrate):
    """10.x: FP16/INT8 are builder flags; an FP32 graph is calibrated for INT8, a Q/DQ graph is not."""
    plan = trt_compat.precision_plan(trt_compat.capabilities(fake_tensorrt(10)), precision, graph)
    assert (plan.builder_flags, plan.calibrate, plan.calibration_profile, plan.typing) == (
        flags,
        calibrate,
        calibrate,
        "weak",
    )


@pytest.mark.parametrize(("precision", "graph"), [("fp32", FP32_GRAPH), ("fp16", FP16_GRAPH), ("int8", QDQ_GRAPH)])
def test_tensorrt_11_builds_the_graphs_own_types(precision, graph):
    """11.x: no flag is set and nothing is calibrated when the graph already carries the precision."""
    plan = trt_compat.precision_plan(trt_compat.capabilities(fake_tensorrt(11)), precision, graph)
    assert (plan.builder_flags, plan.calibrate, plan.typing) == ((), False, "strong")


def test_tensorrt_11_refuses_implicit_int8_naming_the_fix():
    """11.x + INT8 from an FP32 ONNX: one line naming the Q/DQ export and TensorRT 10."""
    caps = trt_compat.capabilities(fake_tensorrt(11))
    with pytest.raises(trt_compat.TensorRTFeatureError) as error:
        trt_compat.precision_plan(caps, "int8", FP32_GRAPH)
    message = str(error.value)
    assert "\n" not in message and "11.4.0.106 has no implicit INT8 calibration" in message
    assert "Q/DQ ONNX" in message and "TensorRT 10" in message


def test_tensorrt_11_refuses_fp16_from_an_fp32_onnx():
    """11.x + FP16 from an FP32 ONNX: the AutoCast conversion or TensorRT 10 is named."""
    caps = trt_compat.capabilities(fake_tensorrt(11))
    with pytest.raises(trt_compat.TensorRTFeatureError, match=r"modelopt\.onnx\.autocast.*TensorRT 10"):
        trt_compat.precision_plan(caps, "fp16", FP32_GRAPH)


@pytest.mark.parametrize("major", [10, 11])
def test_qdq_graph_must_be_built_as_int8(major):
    """A Q/DQ ONNX asked for as fp16 is refused on both versions (its INT8 layers need the INT8 build)."""
    caps = trt_compat.capabilities(fake_tensorrt(major))
    with pytest.raises(trt_compat.TensorRTFeatureError, match="build it as int8"):
        trt_compat.precision_plan(caps, "fp16", QDQ_GRAPH)


def test_unknown_precision_is_named():
    """A typo in the precision names the valid ones."""
    with pytest.raises(trt_compat.TensorRTFeatureError, match=r"fp32.*'int4'"):
        trt_compat.precision_plan(trt_compat.capabilities(fake_tensorrt(10)), "int4", FP32_GRAPH)


def test_graph_precision_finds_qdq_and_half_layers():
    """Q/DQ layers and FP16 layer outputs are found in a parsed network; a plain FP32 network has neither."""
    trt = fake_tensorrt(11)

    def network(*layers):
        made = [
            SimpleNamespace(type=kind, num_outputs=1, get_output=lambda i, d=dtype: SimpleNamespace(dtype=d))
            for kind, dtype in layers
        ]
        image = SimpleNamespace(dtype=DataType.FLOAT)
        return SimpleNamespace(
            num_inputs=1, get_input=lambda i: image, num_layers=len(made), get_layer=lambda i: made[i]
        )

    fp32 = network((LayerType.CONVOLUTION, DataType.FLOAT), (LayerType.ACTIVATION, DataType.FLOAT))
    fp16 = network((LayerType.CONVOLUTION, DataType.HALF))
    qdq = network((LayerType.QUANTIZE, DataType.INT8), (LayerType.DEQUANTIZE, DataType.FLOAT))
    assert trt_compat.graph_precision(fp32, trt) == FP32_GRAPH
    assert trt_compat.graph_precision(fp16, trt) == FP16_GRAPH
    assert trt_compat.graph_precision(qdq, trt) == trt_compat.GraphPrecision(qdq=True, half=False)


def test_set_builder_flags_sets_the_named_members():
    """The plan's flag names become the module's BuilderFlag members on the config."""
    trt = fake_tensorrt(10)
    config = trt.IBuilderConfig()
    trt_compat.set_builder_flags(config, trt, trt_compat.PrecisionPlan(("FP16", "INT8"), True, False, "weak"))
    assert config.flags == [trt.BuilderFlag.FP16, trt.BuilderFlag.INT8]


def test_calibrator_base_exists_only_where_implicit_int8_does():
    """10.x gives IInt8EntropyCalibrator2; 11.x raises the one-line fix instead of an AttributeError."""
    ten = fake_tensorrt(10)
    assert trt_compat.calibrator_base(ten) is ten.IInt8EntropyCalibrator2
    with pytest.raises(trt_compat.TensorRTFeatureError, match="no implicit INT8 calibration"):
        trt_compat.calibrator_base(fake_tensorrt(11))


def test_engine_device_memory_prefers_v2():
    """device_memory_size_v2 (10.x, 11.x) first, device_memory_size (8.6) otherwise, 0 when neither exists."""
    assert trt_compat.engine_device_memory(SimpleNamespace(device_memory_size_v2=5, device_memory_size=3)) == 5
    assert trt_compat.engine_device_memory(SimpleNamespace(device_memory_size_v2=7)) == 7
    assert trt_compat.engine_device_memory(SimpleNamespace(device_memory_size=3)) == 3
    assert trt_compat.engine_device_memory(SimpleNamespace()) == 0


def test_ultralytics_engine_export_needs_modelopt_on_tensorrt_11():
    """format=engine FP16/INT8 on TensorRT 11 without ModelOpt: one line naming the install; fine on 10 or with it."""
    eleven, ten = trt_compat.capabilities(fake_tensorrt(11)), trt_compat.capabilities(fake_tensorrt(10))
    problem = trt_compat.ultralytics_engine_problem(eleven, "fp16", modelopt_installed=False)
    assert "nvidia-modelopt[onnx]" in problem and "TensorRT 10" in problem and "\n" not in problem
    assert trt_compat.ultralytics_engine_problem(eleven, "int8", modelopt_installed=True) is None
    assert trt_compat.ultralytics_engine_problem(eleven, "fp32", modelopt_installed=False) is None
    assert trt_compat.ultralytics_engine_problem(ten, "int8", modelopt_installed=False) is None
