"""The study table's verdict column: a loss beyond 2 SE is marked as plainly as a gain."""

from __future__ import annotations

import json

import torch

from yolokd.evaluation.study import RunScore, environment
from yolokd.evaluation.study_report import StudyReport


def _report(maps: dict[str, list[float]]) -> StudyReport:
    seeds = [0, 1, 2]
    scores = [
        RunScore(row, seed, value, value, {"ap": value}, 1.0, "")
        for row, values in maps.items()
        for seed, value in zip(seeds, values, strict=True)
    ]
    settings = {"rows": list(maps), "seeds": seeds, "train_args": {}, "teacher": "teacher.pt"}
    return StudyReport(scores, settings, None, 60.0)


def test_table_marks_better_worse_and_noise_rows():
    """Header 'vs baseline (2 SE rule)'; +5.2 SE reads better, -10.4 SE reads WORSE, +0.5 SE reads noise."""
    markdown = _report(
        {
            "baseline": [0.10, 0.10, 0.10],
            "gains": [0.12, 0.14, 0.13],
            "hurts": [0.05, 0.03, 0.04],
            "flat": [0.13, 0.09, 0.095],
        }
    ).markdown()
    summary_table = markdown.split("\n\n")[0].splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in summary_table}
    assert "| vs baseline (2 SE rule) |" in rows["row"]
    assert "| better (+5.2 SE) |" in rows["gains"]
    assert "| WORSE (-10.4 SE) |" in rows["hurts"]
    assert "| noise (" in rows["flat"] and "WORSE" not in rows["flat"]
    assert "'WORSE' when gain < -2 x SE" in markdown


def test_report_shows_each_kd_rows_balance(tmp_path):
    """A KD row whose run wrote kd_balance.json gets a line with its share at paper weights and its starting scale."""
    run_dir = tmp_path / "seed0" / "bckd"
    run_dir.mkdir(parents=True)
    balance = {"weight_mode": "auto", "methods": {"bckd_cls_bckd_loc": {"measured_share": 0.1, "scale": 10.0}}}
    (run_dir / "kd_balance.json").write_text(json.dumps(balance))
    scores = [
        RunScore("baseline", 0, 0.1, 0.2, {"ap": 0.1}, 1.0, str(tmp_path / "seed0" / "baseline")),
        RunScore("bckd", 0, 0.12, 0.2, {"ap": 0.12}, 1.0, str(run_dir)),
    ]
    settings = {"rows": ["baseline", "bckd"], "seeds": [0], "train_args": {}, "teacher": "t.pt"}
    markdown = StudyReport(scores, settings, None, 1.0).markdown()
    assert "| bckd | bckd_cls_bckd_loc | auto | 0.1 | 10 | 1 |" in markdown
    assert "| baseline | " not in markdown.split("KD balance")[1]  # no KD, no balance line


def test_report_names_the_environment_it_ran_in():
    """Results depend on the torch build, so the study's settings carry it and the report prints it."""
    report = _report({"baseline": [0.1, 0.2, 0.3]})
    report.settings["environment"] = environment()
    assert f"torch {torch.__version__}" in report.markdown().split("Environment: ")[1]
