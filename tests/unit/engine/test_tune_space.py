"""yolokd tune's search space: read from each method's Params; a bad space is a one-line error before any run."""

from __future__ import annotations

import sys

import pytest

from yolokd.cli import main
from yolokd.config import ConfigError, load_experiment
from yolokd.engine.tune import check_space, default_space, experiment_with, with_candidates

BASE = {"model": "yolov8n.yaml", "teacher": "teacher.pt"}


def _experiment(distill, **extra):
    return load_experiment({**BASE, "distill": distill, **extra})


def test_default_space_auto_mode():
    """auto balance: grad_share per method, weights only of multi-term methods, temperatures, metadata bounds; LD
    keeps its own scale (grad_share null), so its weight is searched as in paper mode."""
    space = default_space(_experiment([{"loss": "bckd"}, {"loss": "ld"}, {"loss": "mgd"}]))
    assert space == {
        "distill.0.grad_share": (0.25, 4.0),
        "distill.0.cls_weight": (0.25, 4.0),
        "distill.0.loc_weight": (1.0, 16.0),
        "distill.1.weight": (0.0625, 1.0),
        "distill.1.temperature": (5.0, 20.0),
        "distill.2.grad_share": (0.025, 0.4),  # a feature-level method: FEATURE_GRAD_SHARE / 4 ... x 4
        "distill.2.mask_ratio": (0.3, 0.9),
    }


def test_an_explicit_grad_share_is_searched_instead_of_the_weight():
    """LD with grad_share set in the config is auto-scaled like any method: its share is searched, its weight not."""
    space = default_space(_experiment([{"loss": "ld", "grad_share": 1.0}]))
    assert space == {"distill.0.grad_share": (0.25, 4.0), "distill.0.temperature": (5.0, 20.0)}


def test_default_space_paper_mode():
    """paper mode: grad_share is ignored there, so the (single) weights are searched instead."""
    space = default_space(_experiment([{"loss": "ld"}], balance={"weight_mode": "paper"}))
    assert space == {"distill.0.weight": (0.0625, 1.0), "distill.0.temperature": (5.0, 20.0)}


def test_user_space_and_best_values_apply():
    """A valid space passes (KD keys and Ultralytics train args); values apply to a copy of the experiment."""
    experiment = _experiment([{"loss": "bckd"}])
    space = check_space(experiment, {"distill.0.loc_weight": [1, 8], "lr0": [0.001, 0.02]})
    assert space == {"distill.0.loc_weight": (1.0, 8.0), "lr0": (0.001, 0.02)}
    tuned = experiment_with(experiment, {"distill.0.loc_weight": 2.5, "lr0": 0.005})
    assert tuned.distill[0].params.loc_weight == 2.5 and tuned.train_args["lr0"] == 0.005
    assert experiment.distill[0].params.loc_weight == 4.0


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"distill.0.cls_wieght": [0.5, 2]}, "space.distill.0.cls_wieght: unknown key for loss 'bckd' (did you mean"),
        ({"distill.3.grad_share": [0.5, 2]}, "space.distill.3.grad_share: expected distill.<index>.<field>"),
        ({"lr_0": [0.001, 0.01]}, "space.lr_0: unknown key (did you mean 'lr0'?)"),
        ({"distill.0.grad_share": [0, 2]}, "space.distill.0.grad_share: bound 0 is outside grad_share's range"),
        ({"distill.1.mask_ratio": [0.5, 1.0]}, "space.distill.1.mask_ratio: bound 1.0 is outside mask_ratio's range"),
        ({"distill.0.cls_weight": [2, 1]}, "space.distill.0.cls_weight: low 2 is above high 1"),
        ({"distill.0.branch": [0, 1]}, "space.distill.0.branch: 'branch' of loss 'bckd' is not a number"),
        ({"momentum": [0.5, 1.5]}, "space.momentum: bound 1.5 is outside its range"),
    ],
)
def test_bad_space_is_a_clear_error(space, message):
    """Unknown keys (with a suggestion), bounds outside the Params' range, reversed or non-numeric: ConfigError."""
    experiment = _experiment([{"loss": "bckd"}, {"loss": "mgd"}])
    with pytest.raises(ConfigError) as error:
        check_space(experiment, space)
    assert str(error.value).startswith(message), str(error.value)


def test_cli_bad_space_one_line(tmp_path, capsys):
    """yolokd tune with a bad space exits 2 with one 'yolokd: error:' line, before any training."""
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("model: yolov8n.yaml\nteacher: teacher.pt\ndistill:\n  - loss: bckd\n")
    assert main(["tune", str(cfg), "space={distill.0.grad_share: [-1, 2]}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("yolokd: error: space.distill.0.grad_share: bound -1")


def test_method_candidates_start_from_the_cfg():
    """methods=: one entry per candidate, the cfg's entry lends its parameters, its methods start on, others off."""
    experiment = _experiment([{"loss": "bckd", "loc_weight": 2.0}])
    candidates, gates = with_candidates(experiment, "bckd,crosskd,pgd")
    assert [entry.name for entry in candidates.distill] == ["bckd", "crosskd", "pgd"]
    assert candidates.distill[0].params.loc_weight == 2.0
    assert gates == {"distill.0.enabled": 0.6, "distill.1.enabled": 0.4, "distill.2.enabled": 0.4}
    _, none_configured = with_candidates(_experiment([{"loss": "mgd"}]), ["crosskd", "pgd"])
    assert none_configured == {"distill.0.enabled": 0.6, "distill.1.enabled": 0.4}  # the first one starts on


def test_gates_keep_the_methods_that_are_on():
    """A trial trains the methods whose gate is >= 0.5, re-indexed; with every gate off, the highest one alone."""
    candidates, _ = with_candidates(_experiment([{"loss": "bckd"}]), "bckd,crosskd,pgd")
    trial = experiment_with(
        candidates,
        {"distill.0.enabled": 0.3, "distill.1.enabled": 0.7, "distill.2.enabled": 0.5, "distill.1.grad_share": 2.0},
    )
    assert [entry.name for entry in trial.distill] == ["crosskd", "pgd"]
    assert trial.distill[0].params.grad_share == 2.0
    off = experiment_with(candidates, {"distill.0.enabled": 0.1, "distill.1.enabled": 0.45, "distill.2.enabled": 0.2})
    assert [entry.name for entry in off.distill] == ["crosskd"]


@pytest.mark.parametrize(
    ("methods", "message"),
    [
        ("bckd,crosskdd", "methods: unknown method 'crosskdd' (did you mean 'crosskd'?)"),
        ("bckd", "methods: give two or more distinct methods"),
        ("bckd,bckd", "methods: give two or more distinct methods"),
    ],
)
def test_bad_methods_are_a_clear_error(methods, message):
    with pytest.raises(ConfigError) as error:
        with_candidates(_experiment([{"loss": "bckd"}]), methods)
    assert str(error.value).startswith(message), str(error.value)


def test_gate_bounds_lie_in_zero_one():
    candidates, _ = with_candidates(_experiment([{"loss": "bckd"}]), "bckd,crosskd")
    assert check_space(candidates, {"distill.1.enabled": [0, 1]}) == {"distill.1.enabled": (0.0, 1.0)}
    with pytest.raises(ConfigError, match=r"space.distill.1.enabled: a method gate's bounds lie in \[0, 1\]"):
        check_space(candidates, {"distill.1.enabled": [0, 1.5]})


def test_cli_ray_without_ray_installed_names_the_extra(tmp_path, capsys, monkeypatch):
    """use_ray=true where Ray is missing: one line naming the extra to install, before any training."""
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("model: yolov8n.yaml\nteacher: teacher.pt\ndistill:\n  - loss: bckd\n")
    assert main(["tune", str(cfg), "use_ray=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'yolokd: error: use_ray: Ray Tune is not installed; pip install "yolokd[tune]" (or leave use_ray off)'
    assert list(tmp_path.iterdir()) == [cfg]
