"""``yolokd export int8=true format=onnx``: a Q/DQ ONNX by ModelOpt PTQ of a trained model (the shipped YOLOv8s on
the synthetic "distinct" scenes), checked like every export; bad requests stop in one line with nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from yolokd.cli import main
from yolokd.demo import SHIPPED_TEACHER
from yolokd.export import images
from yolokd.export.exporter import export_model
from yolokd.quant.backend import modelopt_problem
from yolokd.quant.int8_export import FAKE_QUANT_MAP_TOLERANCE

pytestmark = pytest.mark.integration
needs_modelopt = pytest.mark.skipif(modelopt_problem() is not None, reason=f"needs {modelopt_problem()}")
IMGSZ = 96
CALIB_IMAGES = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A copy of the shipped YOLOv8s (trained on the distinct scenes): exports are written beside it."""
    return Path(shutil.copy(SHIPPED_TEACHER, tmp_path_factory.mktemp("int8") / "best.pt"))


@pytest.fixture(scope="module")
def ptq(trained, distinct_data):
    """export_model(int8=True, format=onnx) with every check: PTQ on 12 train images, parity and mAP on val."""
    if modelopt_problem():
        pytest.skip(f"needs {modelopt_problem()}")
    return export_model(
        trained, format="onnx", int8=True, imgsz=IMGSZ, data=str(distinct_data), parity_images=4, calib_images=12
    )


def conv_sources(path: Path) -> list[tuple[str, str, str]]:
    """(node, op feeding its input, weight initializer) of every Conv, read with onnx alone."""
    graph = onnx.load(str(path)).graph
    producer = {output: node for node in graph.node for output in node.output}
    rows = []
    for node in (node for node in graph.node if node.op_type == "Conv"):
        weight = node.input[1]
        while weight in producer:  # DequantizeLinear <- QuantizeLinear <- initializer
            weight = producer[weight].input[0]
        feeding = producer.get(node.input[0])
        rows.append((node.name, feeding.op_type if feeding else "graph input", weight))
    return rows


@needs_modelopt
def test_ptq_onnx_passes_the_checker_and_runs_in_onnxruntime(ptq):
    """Full onnx.checker, and ONNX Runtime runs a real image to finite (1, 4 + C, A) outputs; every check passed."""
    assert ptq.report["passed"], ptq.problems
    onnx.checker.check_model(str(ptq.path), full_check=True)
    session = onnxruntime.InferenceSession(str(ptq.path), providers=["CPUExecutionProvider"])
    batch = images.letterbox(images.read_images(images.default_images()[:1]), (IMGSZ, IMGSZ))
    output = session.run(None, {"images": batch.astype(np.float32) / 255})[0]
    anchors = sum((IMGSZ // stride) ** 2 for stride in (8, 16, 32))
    assert output.shape == (1, 4 + 4, anchors) and np.isfinite(output).all()


@needs_modelopt
def test_every_conv_has_qdq_on_input_and_weight_or_is_listed_with_a_reason(ptq):
    """Read from the ONNX alone: a Conv is INT8 (DequantizeLinear on input and weight) or a listed float layer."""
    listed = {layer["name"]: layer for layer in ptq.report["quantization"]["float_layers"]}
    graph = onnx.load(str(ptq.path)).graph
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    int8 = 0
    for node_name, _, weight in conv_sources(ptq.path):
        node = next(node for node in graph.node if node.name == node_name)
        if node.input[0] in dequantized and node.input[1] in dequantized:
            int8 += 1
        else:
            layer = listed[weight.removesuffix(".weight")]  # KeyError: a float conv the report does not list
            assert layer["reason"] and layer["output"]
    assert int8 == ptq.report["checks"]["qdq"]["int8"] >= 50 and len(listed) == 7  # 6 head outputs + DFL
    assert ptq.report["checks"]["qdq"]["problems"] == []


@needs_modelopt
def test_qdq_is_symmetric_int8_as_tensorrt_requires(ptq):
    """Every QuantizeLinear is INT8 with zero point 0 (TensorRT rejects asymmetric Q/DQ)."""
    graph = onnx.load(str(ptq.path)).graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    constants.update(
        {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"}
    )
    zero_points = [constants[node.input[2]] for node in graph.node if node.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)


@needs_modelopt
def test_report_names_the_method_the_train_split_and_the_sample_count(ptq, distinct_data):
    """PTQ, 'max' calibration on 12 images of the train split (all from it), in the JSON and the Markdown."""
    section = ptq.report["quantization"]
    calibration = section["calibration"]
    assert (section["method"], calibration["method"], calibration["split"]) == ("PTQ", "max", "train")
    assert calibration["images"] == CALIB_IMAGES == len(calibration["files"]) and calibration["batches"] == 2
    train = {str(path) for path in images.split_images(distinct_data, "train")}
    assert set(calibration["files"]) <= train and section["library"].startswith("nvidia-modelopt 0.")
    markdown = ptq.files["report_md"].read_text()
    assert f"PTQ, max calibration on {CALIB_IMAGES} images of the 'train' split" in markdown
    assert "`model.22.dfl.conv` (DFL expectation" in markdown and "Kept in float (7 weighted layers" in markdown


@needs_modelopt
def test_map_is_reported_next_to_fp32_and_the_fake_quant_model(ptq):
    """mAP of the fp32 student, the fake-quant model and the ONNX; the ONNX within the tolerance of fake-quant."""
    result = ptq.report["checks"]["map"]
    assert result["reference"].startswith("fp32 PyTorch student")
    assert result["pytorch"]["metrics/mAP50-95(B)"] > 0.2  # a real detector, so the deltas mean something
    fake = result["fake_quant"]
    assert abs(fake["delta"]["metrics/mAP50-95(B)"]) <= FAKE_QUANT_MAP_TOLERANCE and not fake["failed"]
    assert "| metrics/mAP50-95(B) |" in ptq.files["report_md"].read_text()


def _refused(arguments: list[str], folder: Path, capsys) -> str:
    """Run `yolokd export` expecting exit 2; return its one-line error; nothing new may be in `folder`."""
    before = sorted(folder.iterdir())
    assert main(["export", *arguments]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("yolokd: error: ")
    assert sorted(folder.iterdir()) == before
    return error


@pytest.fixture
def student_copy(tmp_path) -> Path:
    """A fresh folder holding only a copy of the shipped checkpoint."""
    return Path(shutil.copy(SHIPPED_TEACHER, tmp_path / "best.pt"))


def test_int8_without_data_is_one_line(student_copy, capsys):
    """int8=true without data= (nothing to calibrate on) stops before exporting."""
    error = _refused([f"model={student_copy}", "format=onnx", "int8=true"], student_copy.parent, capsys)
    assert "data: int8 needs data=path/to/data.yaml for calibration (its 'train' split is read)" in error


def test_unsupported_format_is_one_line(student_copy, distinct_data, capsys):
    """int8 to a format yolokd does not export (tflite) names the valid formats."""
    arguments = [f"model={student_copy}", "format=tflite", "int8=true", f"data={distinct_data}"]
    assert "format: expected one of ('onnx', 'engine'), got 'tflite'" in _refused(
        arguments, student_copy.parent, capsys
    )


def test_unsupported_opset_is_one_line(student_copy, distinct_data, capsys):
    """A Q/DQ ONNX needs per-channel DequantizeLinear: opset 12 is refused before anything is written."""
    arguments = [f"model={student_copy}", "format=onnx", "int8=true", f"data={distinct_data}", "opset=12"]
    assert "opset: an INT8 Q/DQ ONNX needs opset >= 13" in _refused(arguments, student_copy.parent, capsys)


def test_missing_modelopt_is_one_line(student_copy, distinct_data, capsys, monkeypatch):
    """Without ModelOpt an INT8 ONNX export names the install instead of letting Ultralytics pip-install it."""
    monkeypatch.setattr(
        "yolokd.quant.backend.modelopt_problem", lambda: "NVIDIA ModelOpt (x): pip install 'yolokd[int8]'"
    )
    arguments = [f"model={student_copy}", "format=onnx", "int8=true", f"data={distinct_data}"]
    assert "needs NVIDIA ModelOpt (x): pip install 'yolokd[int8]'" in _refused(arguments, student_copy.parent, capsys)


@needs_modelopt
def test_a_model_without_a_detect_head_is_one_line(tmp_path, distinct_data, capsys):
    """A classification checkpoint has no Detect head: the INT8 export refuses it, nothing written."""
    import torch
    from ultralytics.nn.tasks import ClassificationModel

    path = tmp_path / "cls.pt"
    torch.save({"model": ClassificationModel("yolov8n-cls.yaml", nc=4, verbose=False).half(), "train_args": {}}, path)
    arguments = [f"model={path}", "format=onnx", "int8=true", f"data={distinct_data}", f"imgsz={IMGSZ}"]
    assert "int8: yolokd quantizes detection models (a Detect head)" in _refused(arguments, tmp_path, capsys)
