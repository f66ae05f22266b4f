"""The KD balance on real pairs: `yolokd balance`, every KD run writing its table, and paper vs auto weights."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_train_args

from yolokd.cli import main
from yolokd.config import load_experiment
from yolokd.engine.trainer import measure_experiment_balance
from yolokd.losses.base import FEATURE_GRAD_SHARE, OUTPUT_GRAD_SHARE

pytestmark = pytest.mark.integration


def _config(data, project, teacher, **extra) -> dict:
    return {**tiny_train_args(data, project, "balance", model="yolov8n.yaml"), "teacher": str(teacher), **extra}


def test_yolokd_balance_prints_and_writes_the_table(synthetic_data, calibrated_teacher, tmp_path, capsys):
    """`yolokd balance CFG.yaml` measures every term and GT component and writes kd_balance.{json,md}."""
    config = _config(synthetic_data, tmp_path, calibrated_teacher("yolov8s.yaml"), distill=[{"loss": "bckd"}])
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["balance", str(path), "balance.batches=2", "distill.0.grad_share=0.5"]) == 0
    out = capsys.readouterr().out
    assert "| bckd_cls |" in out and "| box_loss |" in out and "kd_balance.md" in out
    saved = json.loads((tmp_path / "balance" / "kd_balance.json").read_text())
    assert saved["batches"] == 2 and set(saved["terms"]) == {"bckd_cls", "bckd_loc"}
    method = saved["methods"]["bckd_cls_bckd_loc"]
    assert method["grad_share"] == 0.5
    assert method["measured_share"] * method["scale"] == pytest.approx(0.5)  # the rule, on a real pair
    assert not (tmp_path / "balance" / "weights" / "last.pt").exists()  # no training happened


def test_paper_mode_keeps_the_papers_weights(synthetic_data, calibrated_teacher, tmp_path):
    """weight_mode: paper measures the same shares but sets every scale to 1 (the papers' weights as written)."""
    teacher = calibrated_teacher("yolov8s.yaml")
    reports = {}
    methods = [{"loss": "ld"}, {"loss": "pkd", "layer_share": 0.5}, {"loss": "bckd"}]
    for mode in ("paper", "auto"):
        config = _config(
            synthetic_data, tmp_path / mode, teacher, distill=methods,
            balance={"weight_mode": mode, "batches": 1},
        )  # fmt: skip
        reports[mode], _ = measure_experiment_balance(load_experiment(config))
    paper, auto = reports["paper"], reports["auto"]
    assert paper.scales == {"ld_loc": 1.0, "pkd_feat": 1.0, "bckd_cls_bckd_loc": 1.0}
    # same measurement, only the decision differs; default shares: BCKD on the head's outputs, PKD on neck features,
    # LD at its own scale (grad_share null: scale 1 in auto mode too); PKD with a layer cap set in its config
    for name, share in (("ld_loc", None), ("pkd_feat", FEATURE_GRAD_SHARE), ("bckd_cls_bckd_loc", OUTPUT_GRAD_SHARE)):
        method = auto.methods[name]
        assert paper.methods[name].measured_share == pytest.approx(method.measured_share, rel=1e-5)
        assert paper.methods[name].layer_pull == pytest.approx(method.layer_pull, rel=1e-5)
        assert method.grad_share == share
        expected = 1.0 if share is None else share / method.measured_share
        if name == "pkd_feat":
            assert method.layer_share == 0.5
            expected = min(expected, 0.5 / method.layer_pull)
        assert method.scale == pytest.approx(expected, rel=1e-6)
    pkd = auto.methods["pkd_feat"]
    assert pkd.layer_pull * pkd.scale <= 0.5 * (1 + 1e-6)  # no layer pulled past the cap


@pytest.mark.parametrize("every_epoch", [True, False], ids=["re-measured", "frozen"])
def test_auto_scales_are_re_measured_each_epoch(synthetic_data, calibrated_teacher, tmp_path, every_epoch):
    """every_epoch: the gradient share is measured again at each epoch's end and the next epoch's scale resets it to
    grad_share; results.csv logs the scale each epoch ran with, kd_state holds the one the next epoch uses.
    every_epoch=false keeps the first scale for the whole run."""
    from test_train_kd import read_results

    from yolokd.engine.checkpoint import kd_state_path
    from yolokd.engine.trainer import DistillationTrainer

    config = _config(
        synthetic_data, tmp_path, calibrated_teacher("yolov8s.yaml"), distill=[{"loss": "ld", "grad_share": 0.5}],
        balance={"batches": 1, "every_epoch": every_epoch}, epochs=3, val=False,
    )  # fmt: skip
    experiment = load_experiment(config)
    trainer = DistillationTrainer(experiment, overrides=experiment.train_args)
    trainer.train()
    scales = [row["kd/scale_ld_loc"] for row in read_results(trainer.save_dir)]
    first = json.loads((trainer.save_dir / "kd_balance.json").read_text())["methods"]["ld_loc"]
    assert scales[0] == pytest.approx(first["scale"], rel=1e-5)  # results.csv keeps 6 significant digits
    if every_epoch:
        assert len(set(scales)) == 3  # the student changed, so did the share LD needs
        final = trainer.balance.methods["ld_loc"]
        assert scales[2] == pytest.approx(final.scale, rel=1e-5)
        assert final.measured_share * final.scale == pytest.approx(0.5)  # the rule holds at the re-measurement
        assert final.grad_norm > 0 and trainer.balance.terms["ld_loc"].grad_norm is None  # only what scales need
        saved = torch.load(kd_state_path(trainer.last), weights_only=False)["balance"]
        assert saved["methods"]["ld_loc"]["scale"] == final.scale  # what a resume after epoch 2 would use
    else:
        assert scales == [scales[0]] * 3
