"""benchmarks/int8_study.py at a tiny scale: FP32, PTQ, KD-QAT and GT-only QAT rows (one seed, one epoch) with
their mAP, checks and ONNX Runtime latency; a second call reuses the cached steps."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import tiny_train_args

from yolokd.demo import SHIPPED_TEACHER
from yolokd.quant.backend import modelopt_problem

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(modelopt_problem() is not None, reason=f"needs {modelopt_problem()}"),
]
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "int8_study.py"
LATENCY = ["--latency-seconds", "0.2", "--latency-runs", "3", "--latency-warmup", "0.1"]


def load_script():
    """The script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("int8_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(distinct_data, tmp_path_factory):
    """The study of a copy of the shipped YOLOv8s with a BCKD experiment: 1 seed, 1 QAT epoch, 8 PTQ images."""
    folder = tmp_path_factory.mktemp("int8_study")
    student = Path(shutil.copy(SHIPPED_TEACHER, folder / "student.pt"))
    config = folder / "exp.yaml"
    experiment = {**tiny_train_args(distinct_data, folder, "kd", imgsz=96), "teacher": str(SHIPPED_TEACHER)}
    config.write_text(yaml.safe_dump({**experiment, "distill": [{"loss": "bckd"}]}))
    arguments = ["--student", str(student), "--config", str(config), "--seeds", "0", "--qat-epochs", "1"]
    arguments += ["--calib-images", "8", "--plain-qat", "--out", str(folder / "out"), *LATENCY]
    module = load_script()
    return module, module.main(arguments), arguments, folder / "out"


def test_every_row_is_measured_and_passes_its_checks(study):
    """fp32, ptq, kd_qat and plain_qat rows with an mAP in [0, 1] from ONNX Runtime, every export's checks passed."""
    _, result, _, _ = study
    rows = result["summary"]["rows"]
    assert list(rows) == ["fp32", "ptq", "kd_qat", "plain_qat"]
    for name, row in rows.items():
        assert 0 < row["map50_95"] <= 1 and row["passed_checks"], name
    assert rows["kd_qat"]["seeds"] == [0] and rows["fp32"]["delta_vs_fp32"] == 0


def test_qat_rows_differ_only_by_the_kd_terms(study):
    """kd_qat trained with BCKD's terms against the teacher; plain_qat with the GT loss alone."""
    _, result, _, _ = study
    kd_run, plain_run = (Path(result["steps"][row][0]["run"]) for row in ("kd_qat", "plain_qat"))
    kd_columns = (kd_run / "results.csv").read_text().splitlines()[0]
    assert "bckd_cls" in kd_columns and "bckd_cls" not in (plain_run / "results.csv").read_text().splitlines()[0]
    assert yaml.safe_load((kd_run / "args.yaml").read_text())["quantize"] == 8


def test_latency_and_the_derived_numbers_are_reported(study):
    """p50 latency of fp32, ptq and kd_qat; PTQ drop, KD-QAT gap and target verdict in the JSON and the Markdown."""
    _, result, _, out = study
    rows = result["summary"]["rows"]
    for name in ("fp32", "ptq", "kd_qat"):
        assert rows[name]["inference_p50_ms"] > 0 and rows[name]["end_to_end_p50_ms"] > 0, name
    summary = result["summary"]
    assert summary["ptq_drop"] == pytest.approx(rows["fp32"]["map50_95"] - rows["ptq"]["map50_95"])
    assert summary["kd_qat_gap"] == pytest.approx(rows["fp32"]["map50_95"] - rows["kd_qat"]["map50_95"])
    assert summary["target_met"] in (True, False)
    assert json.loads((out / "int8_study.json").read_text())["summary"] == summary
    markdown = (out / "int8_study.md").read_text()
    assert "| kd_qat | 0 |" in markdown and "python benchmarks/int8_study.py --student" in markdown


def test_a_second_call_reuses_the_cached_steps(study, monkeypatch):
    """Run again with the same folder: no training, no export; the same steps come back from <out>/steps."""
    module, result, arguments, _ = study

    def refuse(*args, **kwargs):
        raise AssertionError("a cached step was measured again")

    monkeypatch.setattr(module, "export_model", refuse)
    monkeypatch.setattr("yolokd.engine.trainer.train_experiment", refuse)
    assert module.main(arguments)["steps"] == result["steps"]
