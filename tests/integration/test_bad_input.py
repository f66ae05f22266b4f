"""Bad teachers are refused when the run is built, with errors that name the problem and the fix."""

from __future__ import annotations

import pytest
import yaml
from conftest import save_untrained_checkpoint, tiny_train_args

from yolokd.cli import main
from yolokd.config import load_experiment
from yolokd.engine.trainer import train_experiment


def _run(data, project, teacher):
    experiment = load_experiment(
        {
            **tiny_train_args(data, project, "run", model="yolov8n.yaml"),
            "teacher": str(teacher),
            "distill": [{"loss": "bckd"}],
        }
    )
    return train_experiment(experiment)


def test_missing_teacher(synthetic_data, tmp_path):
    """A teacher path that does not exist -> FileNotFoundError naming the path."""
    with pytest.raises(FileNotFoundError, match=r"teacher checkpoint not found: .*nowhere\.pt"):
        _run(synthetic_data, tmp_path, tmp_path / "nowhere.pt")


def test_corrupt_teacher(synthetic_data, tmp_path):
    """A damaged teacher file -> RuntimeError saying it could not be read."""
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(RuntimeError, match="could not be read"):
        _run(synthetic_data, tmp_path, broken)


def test_teacher_with_other_class_count(synthetic_data, tmp_path):
    """A teacher trained on 3 classes cannot teach an 8-class student."""
    teacher = save_untrained_checkpoint("yolov8s.yaml", {0: "a", 1: "b", 2: "c"}, tmp_path / "t3.pt")
    with pytest.raises(ValueError, match="other classes than the dataset: teacher 3 classes"):
        _run(synthetic_data, tmp_path, teacher)


def test_teacher_with_other_class_names(synthetic_data, synthetic_names, tmp_path):
    """Same class count, different names (another dataset) is refused too."""
    renamed = {i: f"other{i}" for i in synthetic_names}
    teacher = save_untrained_checkpoint("yolov8s.yaml", renamed, tmp_path / "renamed.pt")
    with pytest.raises(ValueError, match="other classes than the dataset"):
        _run(synthetic_data, tmp_path, teacher)


def test_teacher_with_other_pyramid_levels(synthetic_data, synthetic_names, tmp_path):
    """A P2-P5 teacher for a P3-P5 student -> error listing both stride sets."""
    teacher = save_untrained_checkpoint("yolov8s-p2.yaml", synthetic_names, tmp_path / "p2.pt")
    with pytest.raises(ValueError, match=r"pyramid levels \(strides \[4.0, 8.0, 16.0, 32.0\]\)"):
        _run(synthetic_data, tmp_path, teacher)


def test_missing_bare_teacher_name(synthetic_data, tmp_path, monkeypatch):
    """A bare name that is no local file and no release asset -> FileNotFoundError (offline: nothing fetched)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"teacher checkpoint not found: 'not_a_release_asset\.pt'"):
        _run(synthetic_data, tmp_path, "not_a_release_asset.pt")


def test_missing_data_file_is_a_one_line_error(synthetic_data, teacher_checkpoint, tmp_path, capsys):
    """data= naming no file -> yolokd's one-line 'data:' error (exit 2), not Ultralytics' RuntimeError traceback."""
    missing = tmp_path / "nowhere" / "data.yaml"
    with pytest.raises(FileNotFoundError, match=r"^data: '.*nowhere/data\.yaml' does not exist$"):
        _run(missing, tmp_path, teacher_checkpoint("yolov8s.yaml"))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny_train_args(missing, tmp_path, "cli", model="yolov8n.yaml")))
    assert main(["train", str(config)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("yolokd: error: data: '")
