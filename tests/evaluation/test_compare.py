"""``compare_runs`` on hand-written run folders (results.csv + args.yaml [+ distill.yaml]) with known metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from yolokd.evaluation.compare import compare_runs
from yolokd.evaluation.runs import read_run

HEADER = "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,{kd}metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss"


def write_run(folder: Path, maps: list[float], kd: dict[str, list[float]] | None = None, **args) -> Path:
    """A finished run: one results.csv row per mAP50-95 value (mAP50 = 2x), args.yaml, distill.yaml for yolokd KD."""
    folder.mkdir(parents=True)
    kd = kd or {}
    kd_columns = "".join(f"train/{name}," for name in kd) + "".join(f"val/{name}," for name in kd)
    lines = [HEADER.format(kd=kd_columns)]
    for epoch, value in enumerate(maps):
        kd_cells = "".join(f"{kd[name][epoch]}," for name in kd) * 2
        lines.append(f"{epoch + 1},1.0,1.0,2.0,1.0,{kd_cells}{2 * value},{value},1.0")
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    (folder / "args.yaml").write_text(yaml.safe_dump({"epochs": len(maps), "val": True, **args}))
    if kd and not args.get("distill_model"):  # a yolokd run; Ultralytics' native KD has no distill.yaml
        losses = sorted({name.split("_")[0] for name in kd})
        (folder / "distill.yaml").write_text(yaml.safe_dump({"distill": [{"loss": loss} for loss in losses]}))
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    return {
        "teacher": write_run(tmp_path / "teacher", [0.30, 0.50]),
        "baseline": write_run(tmp_path / "baseline", [0.10, 0.20]),
        "bckd": write_run(tmp_path / "bckd", [0.15, 0.30, 0.28], {"bckd_cls": [3, 2, 1], "bckd_loc": [6, 5, 4]}),
        "native": write_run(tmp_path / "native", [0.1, 0.26], {"dis_loss": [0.4, 0.3]}, distill_model="t.pt"),
    }


def test_table_gain_and_gap(runs, tmp_path):
    """Gain = final - baseline final; gap closed = gain / (teacher - baseline); best epoch reported beside it."""
    result = compare_runs(
        [runs["bckd"], runs["native"]], baseline=runs["baseline"], teacher=runs["teacher"], out=tmp_path / "cmp"
    )
    rows = {row.label: row for row in result.rows}
    assert [row.label for row in result.rows] == ["teacher", "baseline", "bckd", "native"]
    assert (rows["teacher"].role, rows["baseline"].role, rows["bckd"].role) == ("teacher", "baseline", "student")
    assert rows["bckd"].gain == pytest.approx(0.08) and rows["bckd"].gap_closed == pytest.approx(0.08 / 0.30)
    assert (rows["bckd"].best_map, rows["bckd"].best_epoch) == (pytest.approx(0.30), 2)
    assert rows["bckd"].final_map50 == pytest.approx(0.56)
    assert rows["native"].methods == "ultralytics distill_model" and rows["bckd"].methods == "bckd"
    assert rows["baseline"].gain is None and rows["teacher"].gap_closed is None


def test_writes_markdown_json_and_figures(runs, tmp_path):
    """compare.md (table + figure links), compare.json and both PNGs are written."""
    result = compare_runs([runs["bckd"], runs["native"]], baseline=runs["baseline"], out=tmp_path / "cmp")
    for name in ("markdown", "json", "map_vs_epoch", "kd_terms"):
        assert result.files[name].is_file() and result.files[name].stat().st_size > 0, name
    text = result.files["markdown"].read_text()
    assert "| bckd | student | bckd | 3 | 0.2800 | 0.5600 | 0.3000 (2) | +0.0800 |" in text
    assert "![kd_terms](compare_kd_terms.png)" in text
    assert json.loads(result.files["json"].read_text())["rows"][1]["gain"] == pytest.approx(0.08)


def test_kd_terms_found_for_yolokd_and_native(runs):
    """KD terms: non-``*_loss`` train columns, plus Ultralytics' ``dis_loss``; the baseline has none."""
    assert read_run(runs["bckd"]).kd_terms == ["bckd_cls", "bckd_loc"]
    assert read_run(runs["native"]).kd_terms == ["dis_loss"]
    assert read_run(runs["baseline"]).kd_terms == []


def test_val_false_run_has_only_its_final_epoch_as_best(tmp_path):
    """With val=False only the last row was validated: best is the final epoch, whatever earlier rows say."""
    run = read_run(write_run(tmp_path / "run", [0.0, 0.0, 0.12], val=False))
    assert run.best() == (pytest.approx(0.12), 3) and not run.validated_every_epoch


def test_missing_results_raise(tmp_path):
    """A folder without results.csv is named in the error."""
    with pytest.raises(FileNotFoundError, match=r"no results\.csv"):
        compare_runs([tmp_path], out=tmp_path / "cmp")
