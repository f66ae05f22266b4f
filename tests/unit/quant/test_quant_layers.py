"""Q/DQ coverage of an ONNX's convolutions, its agreement with the layers kept in float, and those layers' reasons."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from yolokd.quant.backend import modelopt_problem
from yolokd.quant.layers import DFL_REASON, OUTPUT_REASON, coverage_problems, float_layers, qdq_coverage

needs_modelopt = pytest.mark.skipif(modelopt_problem() is not None, reason=f"needs {modelopt_problem()}")


def two_conv_onnx(path, quantize_second: bool = False):
    """images -> Q/DQ -> conv `a` (weight through Q/DQ) -> conv `b` (plain, or Q/DQ too): a hand-built Q/DQ graph."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 1, 3, 3)).astype(np.float32), "a.weight"),
        numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), "b.weight"),
        numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
    ]

    def qdq(name: str) -> list:
        return [
            helper.make_node("QuantizeLinear", [name, "scale", "zero"], [f"{name}_q"]),
            helper.make_node("DequantizeLinear", [f"{name}_q", "scale", "zero"], [f"{name}_dq"]),
        ]

    nodes = [*qdq("images"), *qdq("a.weight")]
    nodes.append(helper.make_node("Conv", ["images_dq", "a.weight_dq"], ["a_out"], name="/a/Conv", pads=[1] * 4))
    if quantize_second:
        nodes += [*qdq("a_out"), *qdq("b.weight")]
        nodes.append(helper.make_node("Conv", ["a_out_dq", "b.weight_dq"], ["output0"], name="/b/Conv"))
    else:
        nodes.append(helper.make_node("Conv", ["a_out", "b.weight"], ["output0"], name="/b/Conv"))
    graph = helper.make_graph(
        nodes,
        "two_conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 2, 4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_coverage_counts_and_names_the_float_conv(tmp_path):
    """One conv with Q/DQ on input and weight, one without: the float one is named by its weight initializer."""
    path = two_conv_onnx(tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.zeros((1, 1, 4, 4), np.float32)})[0].shape == (1, 2, 4, 4)
    coverage = qdq_coverage(path)
    assert (coverage["layers"], coverage["int8"], coverage["names"]) == (2, 1, ["a", "b"])
    assert coverage["float"] == [dict(node="/b/Conv", layer="b", input_qdq=False, weight_qdq=False)]
    assert (coverage["quantize_nodes"], coverage["dequantize_nodes"]) == (2, 2)


def test_no_problem_when_the_float_conv_was_kept_on_purpose(tmp_path):
    """The float conv listed by the quantizer: the two readings agree."""
    assert coverage_problems(qdq_coverage(two_conv_onnx(tmp_path / "m.onnx")), {"b"}) == []


def test_an_unlisted_float_conv_is_a_problem(tmp_path):
    """A conv without Q/DQ that the quantizer did not keep in float on purpose fails, naming node and layer."""
    problems = coverage_problems(qdq_coverage(two_conv_onnx(tmp_path / "m.onnx")), set())
    assert problems == ["ONNX node /b/Conv (b) has no Q/DQ on its input but the quantizer did not keep it in float"]


def test_a_listed_layer_with_qdq_is_a_problem_and_an_absent_one_is_not(tmp_path):
    """Kept-float layer `b` quantized in the ONNX fails; a kept-float layer absent from the ONNX is not compared."""
    coverage = qdq_coverage(two_conv_onnx(tmp_path / "m.onnx", quantize_second=True))
    assert coverage["float"] == [] and coverage["int8"] == 2
    assert coverage_problems(coverage, {"b", "one2many.head"}) == ["b was kept in float but has Q/DQ in the ONNX"]


def test_an_onnx_without_any_qdq_is_a_problem(tmp_path):
    """An 'INT8' ONNX whose convolutions all lack Q/DQ (the export lost them) fails even if all were listed."""
    coverage = qdq_coverage(two_conv_onnx(tmp_path / "m.onnx"))
    coverage.update(int8=0, float=[*coverage["float"], dict(node="/a/Conv", layer="a", input_qdq=0, weight_qdq=0)])
    assert "lost the Q/DQ" in coverage_problems(coverage, {"a", "b"})[0]


@needs_modelopt
def test_float_layers_of_a_quantized_yolov8n_are_the_head_outputs_and_dfl():
    """PTQ keeps exactly the 6 head output convs (3 class logits, 3 box bins) and DFL in float, with their reasons."""
    from ultralytics.nn.tasks import DetectionModel

    from yolokd.quant.ptq import quantize_ptq

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    quantize_ptq(model, np.random.default_rng(0).integers(0, 255, (2, 3, 64, 64), dtype=np.uint8))
    layers = {layer.name: layer for layer in float_layers(model)}
    outputs = {f"model.22.cv{part}.{level}.2" for part in (2, 3) for level in range(3)}
    assert set(layers) == {*outputs, "model.22.dfl.conv"}
    assert layers["model.22.cv3.0.2"].output == "class logits (C=3)"
    assert layers["model.22.cv2.1.2"].output == "box bins (4R=64)"
    assert layers["model.22.dfl.conv"].reason == DFL_REASON
    assert {layers[name].reason for name in outputs} == {OUTPUT_REASON}
    quantized = [m for m in model.modules() if hasattr(m, "weight_quantizer") and m.weight_quantizer.is_enabled]
    assert len(quantized) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) - 7
