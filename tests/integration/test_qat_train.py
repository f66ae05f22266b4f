"""KD-QAT on the synthetic set: `yolokd qat` fine-tunes the fake-quant shipped YOLOv8s with BCKD against its float
self (the float student as teacher) for one epoch; the checkpoint loads, exports a Q/DQ ONNX and resumes."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_train_args

from yolokd.cli import main
from yolokd.config import load_experiment
from yolokd.demo import SHIPPED_TEACHER
from yolokd.engine.trainer import DistillationTrainer
from yolokd.export.exporter import export_model
from yolokd.quant.backend import checkpoint_is_qat, modelopt_problem
from yolokd.quant.int8_export import FAKE_QUANT_MAP_TOLERANCE
from yolokd.quant.qat import qat_experiment

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(modelopt_problem() is not None, reason=f"needs {modelopt_problem()}"),
]
IMGSZ = 96
KD_COLUMNS = ("train/bckd_cls", "train/bckd_loc", "val/bckd_cls", "val/bckd_loc")


def _config(data: Path, project: Path) -> dict:
    """The experiment: BCKD with the shipped YOLOv8s as teacher, tiny CPU train arguments at 96 px."""
    args = tiny_train_args(data, project, "kd", imgsz=IMGSZ)
    return {**args, "teacher": str(SHIPPED_TEACHER), "distill": [{"loss": "bckd"}]}


@pytest.fixture(scope="module")
def float_student(tmp_path_factory) -> Path:
    """The trained float student QAT starts from: a copy of the shipped YOLOv8s."""
    return Path(shutil.copy(SHIPPED_TEACHER, tmp_path_factory.mktemp("float") / "best.pt"))


@pytest.fixture(scope="module")
def qat_run(distinct_data, float_student, tmp_path_factory) -> Path:
    """`yolokd qat exp.yaml model=best.pt epochs=1`: the run folder."""
    folder = tmp_path_factory.mktemp("qat")
    config = folder / "exp.yaml"
    config.write_text(yaml.safe_dump(_config(distinct_data, folder)))
    assert main(["qat", str(config), f"model={float_student}", "epochs=1"]) == 0
    return folder / "kd_qat"


def test_kd_terms_are_finite_and_nonzero(qat_run):
    """results.csv of the QAT epoch: BCKD's train and val terms are finite and > 0, beside the GT columns."""
    (row,) = list(csv.DictReader((qat_run / "results.csv").open()))
    row = {key.strip(): value for key, value in row.items()}
    for column in KD_COLUMNS:
        assert math.isfinite(float(row[column])) and float(row[column]) > 0, column
    assert float(row["train/box_loss"]) > 0


def test_qat_checkpoint_carries_int8_and_the_qat_schedule(qat_run, float_student):
    """best.pt has a ModelOpt state, loads with ultralytics.YOLO as a fake-quant model, and records its schedule."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import is_qat

    best = qat_run / "weights" / "best.pt"
    assert checkpoint_is_qat(best) and is_qat(YOLO(str(best)).model)
    args = torch.load(best, weights_only=False, map_location="cpu")["train_args"]
    assert (args["quantize"], args["model"], args["optimizer"], args["lr0"]) == (8, str(float_student), "AdamW", 1e-4)


def test_qat_export_matches_the_fake_quant_model(qat_run, distinct_data):
    """The QAT checkpoint exports a Q/DQ ONNX that passes every check; its mAP is within the tolerance of the
    fake-quant PyTorch model's, and the float model QAT started from is the reference."""
    best = Path(shutil.copy(qat_run / "weights" / "best.pt", qat_run / "export.pt"))
    result = export_model(best, format="onnx", imgsz=IMGSZ, data=str(distinct_data), parity_images=4)
    assert result.report["passed"], result.problems
    assert result.report["precision"] == "int8" and result.report["quantization"]["method"] == "QAT"
    assert result.report["checks"]["qdq"]["problems"] == [] and result.report["checks"]["qdq"]["int8"] >= 50
    found = result.report["checks"]["map"]
    assert found["reference"].startswith("fp32 PyTorch") and found["pytorch"]["metrics/mAP50-95(B)"] > 0.2
    assert abs(found["fake_quant"]["delta"]["metrics/mAP50-95(B)"]) <= FAKE_QUANT_MAP_TOLERANCE


def test_resume_restores_the_quantizers(distinct_data, float_student, tmp_path):
    """Stopped after epoch 1 of 2, `yolokd qat resume=last.pt` continues at epoch 2 with the fake-quant student,
    its EMA and the quantizer ranges of the checkpoint; both epochs log KD terms."""
    from ultralytics.utils.torch_utils import is_qat, unwrap_model

    experiment = qat_experiment(_config(distinct_data, tmp_path), {"model": str(float_student), "epochs": 2})
    first = DistillationTrainer(experiment, overrides=experiment.train_args)

    def interrupt(_trainer):
        raise KeyboardInterrupt("simulated interruption after the epoch-1 checkpoint")

    first.add_callback("on_model_save", interrupt)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    saved = torch.load(first.last, weights_only=False, map_location="cpu")["modelopt"]["ranges"]
    amax = {key: value for key, value in saved.items() if key.endswith("_amax")}
    assert amax

    seen = {}

    def record(trainer):
        ema = trainer.ema.ema.state_dict()
        seen.update(start=trainer.start_epoch, qat=is_qat(unwrap_model(trainer.model)), ema_qat=is_qat(trainer.ema.ema))
        seen["same_ranges"] = all(torch.equal(ema[key].cpu(), value.float().cpu()) for key, value in amax.items())

    resumed = DistillationTrainer(None, overrides={"resume": str(first.last)})
    resumed.add_callback("on_train_start", record)
    resumed.train()
    assert seen == {"start": 1, "qat": True, "ema_qat": True, "same_ranges": True}
    rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader((resumed.save_dir / "results.csv").open())]
    assert [float(row["epoch"]) for row in rows] == [1.0, 2.0]
    assert all(float(row["train/bckd_cls"]) > 0 for row in rows)
    assert load_experiment(yaml.safe_load((resumed.save_dir / "distill.yaml").read_text())).train_args["quantize"] == 8
