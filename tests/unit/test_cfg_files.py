"""The shipped experiment configs: valid, found by name from any folder, and the demo config matches the demo."""

import inspect
from pathlib import Path

import pytest

from yolokd.config import SHIPPED_CONFIG_DIR, load_experiment, resolve_config, shipped_configs
from yolokd.demo import run_demo

REPO_CFG = Path(__file__).resolve().parents[2] / "cfg"


@pytest.mark.parametrize("name", shipped_configs())
def test_shipped_config_is_valid(name):
    """Every yolokd/cfg/*.yaml loads and validates (unknown keys, types, ranges)."""
    experiment = load_experiment(SHIPPED_CONFIG_DIR / name)
    assert experiment.distill and experiment.teacher.endswith(".pt")


def test_shipped_configs_live_in_the_package():
    """The configs are package data (yolokd/cfg), and the repository's cfg/ is that same folder."""
    assert Path(__file__).resolve().parents[2] / "yolokd" / "cfg" == SHIPPED_CONFIG_DIR
    assert len(shipped_configs()) >= 10 and "bckd_yolov8n.yaml" in shipped_configs()
    assert REPO_CFG.resolve() == SHIPPED_CONFIG_DIR


@pytest.mark.parametrize("written", ["bckd_yolov8n.yaml", "cfg/bckd_yolov8n.yaml"])
def test_shipped_config_found_by_name_from_any_folder(written, tmp_path, monkeypatch):
    """A bare name or the README's cfg/<name> finds the shipped config from a folder that has neither."""
    monkeypatch.chdir(tmp_path)
    assert resolve_config(written) == SHIPPED_CONFIG_DIR / "bckd_yolov8n.yaml"
    assert load_experiment(written).source == str(SHIPPED_CONFIG_DIR / "bckd_yolov8n.yaml")


def test_existing_file_wins_over_the_shipped_config(tmp_path, monkeypatch):
    """A local cfg/bckd_yolov8n.yaml (an edited copy) is used instead of the shipped one of the same name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg").mkdir()
    local = Path("cfg") / "bckd_yolov8n.yaml"
    local.write_text("model: yolov8n.yaml\n")
    assert resolve_config("cfg/bckd_yolov8n.yaml") == local
    assert load_experiment("cfg/bckd_yolov8n.yaml").distill == []


def test_unknown_name_suggests_a_shipped_config(tmp_path, monkeypatch):
    """A misspelt shipped name -> FileNotFoundError with a suggestion and the shipped names."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cfg/bckd_yolov8\.yaml \(did you mean 'bckd_yolov8n\.yaml'\?\)"):
        resolve_config("cfg/bckd_yolov8.yaml")


def test_other_folders_are_never_redirected(tmp_path, monkeypatch):
    """A missing path in any folder other than cfg/ is an error, not silently the shipped config of that name."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^experiment config not found: mine/bckd_yolov8n\.yaml$"):
        resolve_config("mine/bckd_yolov8n.yaml")


def test_demo_config_matches_demo_defaults():
    """cfg/demo.yaml trains the same student as `yolokd demo` (model, epochs, imgsz, batch, seed, method)."""
    defaults = {k: v.default for k, v in inspect.signature(run_demo).parameters.items()}
    experiment = load_experiment(SHIPPED_CONFIG_DIR / "demo.yaml")
    args = experiment.train_args
    assert args["model"] == defaults["student"] and args["epochs"] == defaults["epochs"]
    assert (args["imgsz"], args["batch"], args["seed"]) == (defaults["imgsz"], defaults["batch"], defaults["seed"])
    assert (args["optimizer"], args["lr0"], args["mosaic"]) == ("AdamW", 0.002, 0.0)
    assert [entry.name for entry in experiment.distill] == [defaults["method"]]
    assert (REPO_CFG.parent / experiment.teacher).resolve() == Path(defaults["teacher"]).resolve()  # shipped teacher
