"""Where the INT8 model is INT8: the layers a quantized student keeps in float (and why), and the Q/DQ coverage of
every convolution in its ONNX.

Two independent readings that must agree: the PyTorch side (which quantizers ModelOpt left disabled) and the
ONNX side (which ``Conv`` nodes have a ``DequantizeLinear`` on both their input and their weight). A convolution
without Q/DQ that the quantizer did not keep in float on purpose is an export fault.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
ONNX_QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")

OUTPUT_REASON = (
    "the Detect head's output convolution: its raw outputs (class logits, box bins) are decoded directly, with no "
    "BatchNorm or activation after it to absorb INT8 rounding, so one INT8 step moves scores and boxes "
    "(Ultralytics' QAT rule, reused for PTQ)"
)
DFL_REASON = (
    "DFL's fixed projection 0..R-1 over the softmax of each box side's bins (not learned): float keeps the box "
    "expectation exact (Ultralytics' QAT rule)"
)
UNHANDLED_REASON = "the quantizer has no INT8 module for this layer type"


@dataclass(frozen=True)
class FloatLayer:
    """A weighted layer of a quantized model that computes in float.

    Attributes:
        name (str): module path, e.g. ``model.22.dfl.conv``; the ONNX weight initializer is ``<name>.weight``.
        output (str): what it computes, e.g. ``class logits (C=80)``, ``box bins (4R=64)``.
        reason (str): why it is not INT8.
    """

    name: str
    output: str
    reason: str


def _enabled(quantizer: nn.Module | None) -> bool:
    return quantizer is not None and bool(getattr(quantizer, "is_enabled", False))


def float_layers(model: nn.Module) -> list[FloatLayer]:
    """Every Conv/Linear layer of a ModelOpt-quantized Ultralytics model whose input or weight is not quantized.

    Args:
        model (nn.Module): a DetectionModel after ``prepare_qat`` (or restored from a QAT checkpoint).
    """
    from ultralytics.nn.modules.block import DFL
    from ultralytics.nn.modules.head import Detect

    head = next((m for m in model.modules() if isinstance(m, Detect)), None)
    dfl_convs = {id(m.conv) for m in model.modules() if isinstance(m, DFL)}
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, QUANTIZABLE):
            continue
        input_on = _enabled(getattr(module, "input_quantizer", None))
        weight_on = _enabled(getattr(module, "weight_quantizer", None))
        if input_on and weight_on:
            continue
        if id(module) in dfl_convs:
            layers.append(FloatLayer(name, "DFL expectation (box bins -> distance)", DFL_REASON))
        elif not hasattr(module, "weight_quantizer"):
            layers.append(FloatLayer(name, type(module).__name__, UNHANDLED_REASON))
        else:
            layers.append(FloatLayer(name, _head_output(module, head), OUTPUT_REASON))
    return layers


def _head_output(module: nn.Module, head: nn.Module | None) -> str:
    """``class logits (C=..)`` / ``box bins (4R=..)`` / ``ltrb distances`` by the output width of a head conv."""
    width = getattr(module, "out_channels", getattr(module, "out_features", None))
    if head is not None and width == head.nc:
        return f"class logits (C={width})"
    if head is not None and width == 4 * head.reg_max:
        return f"box bins (4R={width})" if head.reg_max > 1 else "box ltrb distances (4)"
    return f"{width} channels"


def qdq_coverage(path: str | Path) -> dict[str, Any]:
    """Q/DQ on the input and the weight of every convolution (and Gemm/MatMul) of an ONNX.

    Returns:
        (dict): ``layers`` (weighted nodes), ``int8`` (with a DequantizeLinear on input and weight), ``float``
        (the others: node, layer = weight initializer name without ``.weight``, input_qdq, weight_qdq), ``names``
        (the layer of every weighted node) and the ``QuantizeLinear`` / ``DequantizeLinear`` node counts.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}

    def from_dequantize(tensor: str) -> bool:
        node = producer.get(tensor)
        return node is not None and node.op_type == "DequantizeLinear"

    def source(tensor: str) -> str:
        """The initializer a weight comes from, through DequantizeLinear / QuantizeLinear / Cast."""
        node = producer.get(tensor)
        while node is not None and node.op_type in ("DequantizeLinear", "QuantizeLinear", "Cast", "Identity"):
            tensor = node.input[0]
            node = producer.get(tensor)
        return tensor

    weighted = [node for node in graph.node if node.op_type in ONNX_QUANTIZABLE and len(node.input) > 1]
    names, unquantized = [], []
    for node in weighted:
        input_qdq, weight_qdq = from_dequantize(node.input[0]), from_dequantize(node.input[1])
        names.append(source(node.input[1]).removesuffix(".weight"))
        if not (input_qdq and weight_qdq):
            unquantized.append(dict(node=node.name, layer=names[-1], input_qdq=input_qdq, weight_qdq=weight_qdq))
    ops = [node.op_type for node in graph.node]
    return {
        "layers": len(weighted),
        "int8": len(weighted) - len(unquantized),
        "float": unquantized,
        "names": names,
        "quantize_nodes": ops.count("QuantizeLinear"),
        "dequantize_nodes": ops.count("DequantizeLinear"),
    }


def coverage_problems(coverage: dict[str, Any], kept_float: set[str]) -> list[str]:
    """Disagreements between the ONNX and the quantizer: a convolution without Q/DQ that was not kept in float on
    purpose, a layer kept in float that has Q/DQ in the ONNX, or an ONNX with no Q/DQ at all. Layers absent from
    the ONNX (e.g. the one2many branch of an end-to-end export) are not compared.

    Args:
        coverage (dict): ``qdq_coverage`` of the ONNX.
        kept_float (set[str]): module paths of the layers the quantizer kept in float (``FloatLayer.name``).
    """
    problems = []
    if coverage["layers"] and not coverage["int8"]:
        problems.append("INT8 ONNX has no convolution with Q/DQ on its input and weight: the export lost the Q/DQ")
    expected = set(kept_float)
    found = {entry["layer"] for entry in coverage["float"]}
    for entry in coverage["float"]:
        if entry["layer"] not in expected:
            problems.append(
                f"ONNX node {entry['node']} ({entry['layer']}) has no Q/DQ on its "
                f"{'weight' if entry['input_qdq'] else 'input'} but the quantizer did not keep it in float"
            )
    in_onnx = set(coverage["names"])
    problems += [f"{name} was kept in float but has Q/DQ in the ONNX" for name in sorted(expected & in_onnx - found)]
    return problems


def float_layer_dicts(layers: list[FloatLayer]) -> list[dict[str, str]]:
    """The layers as plain dicts (for the JSON report)."""
    return [asdict(layer) for layer in layers]
