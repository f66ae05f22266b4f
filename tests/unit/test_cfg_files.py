"""The shipped experiment configs are valid and the demo config matches the demo's defaults."""

import inspect
from pathlib import Path

import pytest

from yolokd.config import load_experiment
from yolokd.demo import run_demo

CFG_DIR = Path(__file__).resolve().parents[2] / "cfg"


@pytest.mark.parametrize("path", sorted(CFG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    """Every cfg/*.yaml loads and validates (unknown keys, types, ranges)."""
    experiment = load_experiment(path)
    assert experiment.distill and experiment.teacher.endswith(".pt")


def test_demo_config_matches_demo_defaults():
    """cfg/demo.yaml trains the same student as `yolokd demo` (model, epochs, imgsz, batch, seed, method)."""
    defaults = {k: v.default for k, v in inspect.signature(run_demo).parameters.items()}
    experiment = load_experiment(CFG_DIR / "demo.yaml")
    args = experiment.train_args
    assert args["model"] == defaults["student"] and args["epochs"] == defaults["epochs"]
    assert (args["imgsz"], args["batch"], args["seed"]) == (defaults["imgsz"], defaults["batch"], defaults["seed"])
    assert (args["optimizer"], args["lr0"], args["mosaic"]) == ("AdamW", 0.002, 0.0)
    assert [entry.name for entry in experiment.distill] == [defaults["method"]]
    assert (CFG_DIR.parent / experiment.teacher).resolve() == Path(defaults["teacher"]).resolve()  # shipped teacher
