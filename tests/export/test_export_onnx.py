"""A distilled student (1-epoch BCKD run) exported to ONNX: checks, parity, mAP via `yolokd val`, no KD residue,
and the latency benchmark of the .pt and the .onnx."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from conftest import save_untrained_checkpoint, tiny_train_args
from ultralytics import YOLO

from yolokd.cli import main
from yolokd.config import load_experiment
from yolokd.engine.trainer import train_experiment
from yolokd.export import checks, images, stats
from yolokd.export.benchmark import run_benchmark
from yolokd.export.exporter import export_model

pytestmark = pytest.mark.integration
IMGSZ = 64


@pytest.fixture(scope="module")
def student(synthetic_data, teacher_checkpoint, tmp_path_factory):
    """best.pt of a 1-epoch BCKD run (YOLOv8n student, YOLOv8n stand-in teacher) on the synthetic set."""
    experiment = load_experiment(
        {
            **tiny_train_args(synthetic_data, tmp_path_factory.mktemp("kd"), "run", model="yolov8n.yaml"),
            "teacher": str(teacher_checkpoint("yolov8n.yaml")),
            "distill": [{"loss": "bckd"}],
        }
    )
    return train_experiment(experiment) / "weights" / "best.pt"


@pytest.fixture(scope="module")
def exported(student, synthetic_data):
    """export_model(best.pt, format=onnx) with every check, data given (parity on val images, mAP delta)."""
    return export_model(student, format="onnx", imgsz=IMGSZ, data=str(synthetic_data), parity_images=4)


def test_export_writes_model_and_reports(exported):
    """The ONNX and <stem>.export.{json,md} exist beside best.pt; every check passed; graph has images/output0."""
    assert exported.path.suffix == ".onnx" and exported.path.is_file()
    assert exported.report["passed"], exported.problems
    report = json.loads(exported.files["report_json"].read_text())
    assert report["checks"]["graph"]["inputs"] == [["images", [1, 3, IMGSZ, IMGSZ]]]
    assert [name for name, _ in report["checks"]["graph"]["outputs"]] == ["output0"]
    assert "checks PASSED" in exported.files["report_md"].read_text()


def test_parity_with_pytorch_independently(student, exported):
    """onnxruntime on a real image matches the fp32 PyTorch student (an oracle outside the export code)."""
    batch = images.letterbox(images.read_images(images.default_images()[:1]), (IMGSZ, IMGSZ))
    tensor = torch.from_numpy(batch).float() / 255
    model = YOLO(str(student)).model.float().eval()
    with torch.inference_mode():
        reference = model(tensor)[0].numpy()
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    output = session.run(None, {"images": tensor.numpy()})[0]
    assert output.shape == reference.shape
    np.testing.assert_allclose(output[:, 4:], reference[:, 4:], atol=1e-4)  # class probabilities
    np.testing.assert_allclose(output[:, :4], reference[:, :4], atol=IMGSZ * 1e-4)  # boxes, pixels
    parity = exported.report["checks"]["parity"]  # the report's numbers agree with the oracle above
    assert parity["cosine"] >= 0.99999 and parity["max_abs_diff_scores"] <= 1e-4
    assert checks.parity_problems(parity, "fp32") == []


def test_yolokd_val_on_onnx_matches_pytorch(exported, student, synthetic_data, capsys, tmp_path):
    """`yolokd val model=best.onnx` works and gives PyTorch's mAP within 0.002 (export report delta too)."""
    args = [f"data={synthetic_data}", "device=cpu", "plots=false", f"project={tmp_path}", "split=val"]
    assert main(["val", f"model={exported.path}", *args]) == 0
    onnx_map = float(re.search(r"metrics/mAP50-95\(B\)\s+([\d.]+)", capsys.readouterr().out).group(1))
    assert main(["val", f"model={student}", f"imgsz={IMGSZ}", "batch=1", "rect=false", *args]) == 0
    torch_map = float(re.search(r"metrics/mAP50-95\(B\)\s+([\d.]+)", capsys.readouterr().out).group(1))
    assert abs(onnx_map - torch_map) <= 0.002
    assert abs(exported.report["checks"]["map"]["delta"]["metrics/mAP50-95(B)"]) <= 0.002


def test_no_kd_residue_same_graph_as_plain_student(exported, synthetic_names, tmp_path):
    """The distilled ONNX has the node count, operators and parameters of a plain YOLOv8n exported the same way."""
    plain = save_untrained_checkpoint("yolov8n.yaml", synthetic_names, tmp_path / "plain.pt", seed=1)
    plain_onnx = YOLO(str(plain)).export(format="onnx", imgsz=IMGSZ, batch=1, simplify=True, verbose=False)
    assert checks.graph_signature(exported.path) == checks.graph_signature(plain_onnx)
    assert exported.report["checks"]["plain"]["same_graph"]
    torch_parameters = exported.report["checks"]["plain"]["torch_parameters"]
    assert torch_parameters["student"] == torch_parameters["plain"]


def test_cli_onnx_for_a_device_build_writes_recipe_and_train_calibration(student, synthetic_data, tmp_path, capsys):
    """`yolokd export profile=jetson-orin-nano-int8 --format onnx`: FP32 ONNX, recipe, calib.npy of train images."""
    copy = tmp_path / "best.pt"
    copy.write_bytes(student.read_bytes())
    arguments = [f"model={copy}", "profile=jetson-orin-nano-int8", "--format", "onnx", f"imgsz={IMGSZ}"]
    assert main(["export", *arguments, f"data={synthetic_data}", "calib_images=6", "checks=false"]) == 0
    assert str(tmp_path / "best.onnx") in capsys.readouterr().out
    calibration = np.load(tmp_path / "best.calib.npy")
    assert calibration.shape == (6, 3, IMGSZ, IMGSZ) and calibration.dtype == np.uint8
    train = images.split_images(synthetic_data, "train")
    expected = images.letterbox(images.read_images(images.pick(train, 6)), (IMGSZ, IMGSZ))
    np.testing.assert_array_equal(calibration, expected)
    recipe = json.loads((tmp_path / "best.build.json").read_text())
    assert (recipe["precision"], recipe["calibration"], recipe["imgsz"]) == ("int8", "best.calib.npy", [IMGSZ, IMGSZ])
    report = json.loads((tmp_path / "best.export.json").read_text())
    assert report["file_precision"] == "fp32" and report["checks"] == "skipped (checks=false)"


def test_benchmark_pt_and_onnx_rows_and_statistics(student, exported, tmp_path):
    """One row per (model, batch); every schema field; stage stats equal numpy percentiles of the samples."""
    copy = tmp_path / "portable.pt"
    copy.write_bytes(student.read_bytes())
    portable = export_model(copy, profile="onnx-portable", imgsz=IMGSZ, batch=2, parity_images=3)
    assert portable.report["passed"], portable.problems
    assert portable.report["checks"]["graph"]["inputs"] == [["images", ["batch", 3, "height", "width"]]]
    models = f"{student},{exported.path},{portable.path}"
    result = run_benchmark(
        model=models, imgsz=IMGSZ, batch="1,2", warmup=0.05, runs=5, seconds=0.05, project=str(tmp_path), name="bench"
    )
    rows = result.report["rows"]
    assert [(row["format"], row["batch"], row["status"]) for row in rows] == [
        ("pt", 1, "ok"),
        ("pt", 2, "ok"),
        ("onnx", 1, "ok"),
        ("onnx", 2, "skipped"),
        ("onnx", 1, "ok"),
        ("onnx", 2, "ok"),
    ]
    assert stats.schema_errors(result.report) == []
    assert "fixed batch of 1" in rows[3]["reason"]
    for row in [row for row in rows if row["status"] == "ok"]:
        assert row["runs"] >= 5 and "gpu_compute" not in row["samples_ms"]  # no GPU here
        for stage in ("preprocess", "inference", "postprocess", "end_to_end"):
            samples = np.array(row["samples_ms"][stage])
            summary = row["stages"][stage]
            expected = np.percentile(samples, [50, 90, 95, 99])
            got = [summary["p50_ms"], summary["p90_ms"], summary["p95_ms"], summary["p99_ms"]]
            np.testing.assert_allclose(got, expected)
            assert summary["mean_ms"] == pytest.approx(samples.mean())
            assert summary["std_ms"] == pytest.approx(samples.std(ddof=1))
            assert (summary["min_ms"], summary["max_ms"]) == (samples.min(), samples.max())
        assert row["throughput_fps"] == pytest.approx(row["batch"] * 1000 / np.mean(row["samples_ms"]["end_to_end"]))
        assert row["gflops_per_image"] > 0 and row["memory"]["peak_rss_mb"] > 0
    with open(result.files["csv"]) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert result.files["png"].stat().st_size > 0
    assert yaml.safe_load(json.dumps(result.report["environment"]))["device_kind"] == "cpu"
