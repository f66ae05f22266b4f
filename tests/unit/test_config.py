"""Tests for experiment configs: loading, validation messages, overrides and the KD schedule."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from yolokd.config import ConfigError, Schedule, apply_overrides, load_experiment, parse_overrides
from yolokd.losses import LOSSES
from yolokd.losses.bckd import BCKDParams


def base_config(**changes: Any) -> dict[str, Any]:
    """A valid experiment dict (one BCKD entry), with top-level keys replaced by `changes`."""
    config = {
        "model": "yolov8n.yaml",
        "data": "coco8.yaml",
        "epochs": 10,
        "close_mosaic": 2,
        "teacher": "weights/teacher.pt",
        "distill": [{"loss": "bckd", "cls_weight": 1.0, "loc_weight": 4.0}],
    }
    config.update(changes)
    return config


def with_entry(**entry: Any) -> dict[str, Any]:
    """A valid experiment whose single distill entry is `entry` (plus loss: bckd unless given)."""
    return base_config(distill=[{"loss": "bckd", **entry}])


def error_of(config: dict[str, Any], overrides: Any = ()) -> str:
    """The ConfigError message raised when loading `config`."""
    with pytest.raises(ConfigError) as info:
        load_experiment(config, overrides)
    return str(info.value)


def test_load_yaml_file(tmp_path: Path) -> None:
    """A valid YAML gives the train args, teacher, typed params, default schedule and its source path."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    experiment = load_experiment(path)
    assert experiment.train_args == {"model": "yolov8n.yaml", "data": "coco8.yaml", "epochs": 10, "close_mosaic": 2}
    assert experiment.teacher == "weights/teacher.pt"
    assert [entry.name for entry in experiment.distill] == ["bckd"]
    assert experiment.distill[0].params == BCKDParams(cls_weight=1.0, loc_weight=4.0)
    assert experiment.schedule == Schedule()
    assert experiment.source == str(path)


def test_int_accepted_for_float() -> None:
    """An int where a float is expected is accepted and stored as a float."""
    params = load_experiment(with_entry(cls_weight=2)).distill[0].params
    assert params.cls_weight == 2.0 and isinstance(params.cls_weight, float)


def test_missing_config_file(tmp_path: Path) -> None:
    """A config path that does not exist raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_experiment(tmp_path / "missing.yaml")


def test_unknown_top_level_key_suggests() -> None:
    """An unknown top-level key names itself, suggests the close Ultralytics key and lists the yolokd keys."""
    message = error_of(base_config(epoch=3))
    assert message.startswith("epoch:")
    assert "did you mean 'epochs'?" in message
    assert "teacher, distill, schedule" in message and "any Ultralytics train argument" in message


def test_unknown_distill_key_lists_valid_keys() -> None:
    """A misspelt loss parameter gets its full path, a suggestion and the valid keys."""
    message = error_of(with_entry(cls_wieght=1.0))
    assert message.startswith("distill.0.cls_wieght:")
    assert "did you mean 'cls_weight'?" in message
    assert "loss, branch, grad_share, layer_share, cls_weight, loc_weight" in message


def test_unknown_schedule_key_suggests() -> None:
    """A misspelt schedule key gets its path and a suggestion."""
    message = error_of(base_config(schedule={"warmup": 1}))
    assert message.startswith("schedule.warmup:") and "did you mean 'warmup_epochs'?" in message


def test_unknown_loss_name_suggests() -> None:
    """An unknown loss name suggests the closest registered one."""
    message = error_of(base_config(distill=[{"loss": "bckdd"}]))
    assert message.startswith("distill.0.loss:") and "did you mean 'bckd'?" in message


@pytest.mark.parametrize("key", ["distill_model", "dis"])
def test_ultralytics_distill_keys_rejected(key: str) -> None:
    """Ultralytics' own distillation keys are rejected with what to use instead."""
    message = error_of(base_config(**{key: "teacher.pt" if key == "distill_model" else 6.0}))
    assert message.startswith(f"{key}:")
    assert "built-in" in message and "teacher:" in message and "distill:" in message


def test_string_for_float_rejected() -> None:
    """A string where a number is expected names the path and the expected type."""
    message = error_of(with_entry(cls_weight="high"))
    assert message.startswith("distill.0.cls_weight:") and "expected a number" in message


def test_exponent_string_gets_yaml_hint() -> None:
    """PyYAML's '1e-3' string gets a hint on how to write the number."""
    assert "1.0e-3" in error_of(with_entry(cls_weight="1e-3"))


def test_bool_for_float_rejected() -> None:
    """A bool is not a number, although Python says it is an int."""
    message = error_of(with_entry(loc_weight=True))
    assert message.startswith("distill.0.loc_weight:") and "expected a number" in message


def test_out_of_range_value_has_path() -> None:
    """A ValueError from Params.__post_init__ becomes a ConfigError carrying the key's path."""
    message = error_of(with_entry(cls_weight=-1))
    assert message.startswith("distill.0.cls_weight:") and ">= 0" in message


POSITIVE_FIELDS = [(name, key) for name, loss in LOSSES.items() for key in loss.Params.positive_fields]


@pytest.mark.parametrize(("loss", "key"), POSITIVE_FIELDS, ids=[f"{n}.{k}" for n, k in POSITIVE_FIELDS])
def test_positive_fields_refuse_zero(loss: str, key: str) -> None:
    """Every field a method declares positive (temperatures, sizes) refuses 0, reported at its path."""
    message = error_of(base_config(distill=[{"loss": loss, key: 0}]))
    assert re.fullmatch(rf"distill\.0\.{key}: {key}=0(\.0)? must be > 0", message), message


def test_positive_fields_are_not_config_keys() -> None:
    """positive_fields is a class attribute, never a config key, and names only real fields of its method."""
    for name, loss in LOSSES.items():
        names = loss.Params.field_names()
        assert "positive_fields" not in names and set(loss.Params.positive_fields) <= set(names), name


RENAMED_FIELDS = [(name, old, new) for name, loss in LOSSES.items() for old, new in loss.Params.renamed_fields]


@pytest.mark.parametrize(("loss", "old", "new"), RENAMED_FIELDS, ids=[f"{n}.{o}" for n, o, _ in RENAMED_FIELDS])
def test_a_renamed_field_is_read_under_its_former_name_with_a_warning(loss, old, new, monkeypatch) -> None:
    """cwd's tau (now temperature) and dfd's hd_weight/ld_weight (now high/low_disparity_weight) still load, as the
    new field, with one warning line naming both; the saved experiment writes the new name."""
    warnings: list[str] = []
    monkeypatch.setattr("yolokd.config_fields.LOGGER.warning", warnings.append)
    experiment = load_experiment(base_config(distill=[{"loss": loss, old: 2.5}]))
    assert getattr(experiment.distill[0].params, new) == 2.5
    assert warnings == [f"yolokd: distill.0.{old} is deprecated, renamed to '{new}'; read as {new}: 2.5"]
    saved = experiment.to_dict()["distill"][0]
    assert saved[new] == 2.5 and old not in saved
    overridden = load_experiment(base_config(distill=[{"loss": loss}]), [f"distill.0.{old}=3"])  # CLI key=value too
    assert getattr(overridden.distill[0].params, new) == 3


@pytest.mark.parametrize(("loss", "old", "new"), RENAMED_FIELDS, ids=[f"{n}.{o}" for n, o, _ in RENAMED_FIELDS])
def test_a_renamed_field_given_under_both_names_is_refused(loss, old, new) -> None:
    """The former and the new name together are ambiguous: one ConfigError at the old name's path."""
    message = error_of(base_config(distill=[{"loss": loss, old: 1.0, new: 2.0}]))
    assert message == f"distill.0.{old}: the former name of '{new}', which is set too; keep only {new}"


def test_renamed_fields_name_real_fields_and_are_not_config_keys() -> None:
    """renamed_fields maps former names to fields that exist, and is itself no config key."""
    for name, loss in LOSSES.items():
        names = loss.Params.field_names()
        assert "renamed_fields" not in names, name
        assert all(new in names and old not in names for old, new in loss.Params.renamed_fields), name
    assert dict(LOSSES["cwd"].Params.renamed_fields) == {"tau": "temperature"}


def test_bad_branch_has_path() -> None:
    """An invalid branch name is reported at its path with the valid branches."""
    message = error_of(with_entry(branch="both"))
    assert message.startswith("distill.0.branch:") and "one2many" in message


def test_bad_ultralytics_type_has_key() -> None:
    """A wrongly typed Ultralytics argument is reported by Ultralytics' own check, prefixed with the key."""
    assert error_of(base_config(epochs="many")).startswith("epochs:")


def test_yaml_teacher_rejected() -> None:
    """A model YAML as teacher is rejected: it would have random weights."""
    message = error_of(base_config(teacher="yolov8s.yaml"))
    assert message.startswith("teacher:") and "random weights" in message and ".pt" in message


def test_non_pt_teacher_rejected() -> None:
    """A teacher path that is not a .pt checkpoint is rejected."""
    assert error_of(base_config(teacher="teacher.onnx")).startswith("teacher:")


def test_missing_teacher_rejected() -> None:
    """Distillation methods without a teacher are rejected."""
    config = base_config()
    del config["teacher"]
    message = error_of(config)
    assert message.startswith("teacher:") and "required" in message


def test_no_distill_needs_no_teacher() -> None:
    """Without methods the teacher is optional (plain training)."""
    experiment = load_experiment({"model": "yolov8n.yaml", "data": "coco8.yaml"})
    assert experiment.teacher is None and experiment.distill == []


@pytest.mark.parametrize("distill", [[], None], ids=["empty", "absent"])
def test_teacher_without_methods_rejected(distill: list | None) -> None:
    """A teacher with no distill methods would train a plain student silently: refused, naming both fixes."""
    config = base_config(distill=distill)
    if distill is None:
        del config["distill"]
    message = error_of(config)
    assert message.startswith("distill: no methods") and "{loss: bckd}" in message and "teacher=null" in message
    assert load_experiment(config, ["teacher=null"]).teacher is None  # the fix the message names works


def test_duplicate_entries_rejected() -> None:
    """Two entries of the same loss on the same branch would log the same terms."""
    message = error_of(base_config(distill=[{"loss": "bckd"}, {"loss": "bckd", "cls_weight": 2.0}]))
    assert message.startswith("distill.1:") and "distill.0" in message


def test_same_loss_on_two_branches_allowed() -> None:
    """The same loss on the one2many and one2one branches gives different terms and is allowed."""
    experiment = load_experiment(base_config(distill=[{"loss": "bckd"}, {"loss": "bckd", "branch": "one2one"}]))
    assert [entry.params.branch for entry in experiment.distill] == ["one2many", "one2one"]


def test_parse_overrides_yaml_values() -> None:
    """Override values are parsed as YAML: ints, bools, and strings with slashes."""
    parsed = parse_overrides(["epochs=3", "amp=false", "name=a/b", "distill.0.cls_weight=2"])
    assert parsed == {"epochs": 3, "amp": False, "name": "a/b", "distill.0.cls_weight": 2}


def test_parse_overrides_needs_equals() -> None:
    """A word without '=' is not an override."""
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_override_nested_list_entry() -> None:
    """distill.0.cls_weight=2 sets the first entry's parameter."""
    experiment = load_experiment(base_config(), ["distill.0.cls_weight=2"])
    assert experiment.distill[0].params.cls_weight == 2.0


def test_override_creates_schedule() -> None:
    """schedule.warmup_epochs=1 creates the schedule mapping when the YAML has none."""
    assert load_experiment(base_config(), ["schedule.warmup_epochs=1"]).schedule.warmup_epochs == 1.0


def test_override_appends_with_index_equal_to_length() -> None:
    """An index equal to the list length appends a new entry."""
    experiment = load_experiment(base_config(), ["distill.1.loss=bckd", "distill.1.branch=one2one"])
    assert [(entry.name, entry.params.branch) for entry in experiment.distill] == [
        ("bckd", "one2many"),
        ("bckd", "one2one"),
    ]


def test_override_index_past_end_rejected() -> None:
    """An index larger than the list length is an error that says how to append."""
    message = error_of(base_config(), ["distill.2.loss=bckd"])
    assert message.startswith("distill.2:") and "distill.1" in message


def test_overridden_unknown_key_rejected() -> None:
    """Overrides are validated like YAML keys."""
    message = error_of(base_config(), ["distill.0.cls_wieght=2"])
    assert message.startswith("distill.0.cls_wieght:") and "did you mean 'cls_weight'?" in message


def test_apply_overrides_leaves_input_untouched() -> None:
    """apply_overrides returns a new dict and does not modify the one given."""
    config = base_config()
    updated = apply_overrides(config, {"distill.0.cls_weight": 3, "epochs": 1})
    assert updated["distill"][0]["cls_weight"] == 3 and updated["epochs"] == 1
    assert config == base_config()


def test_to_dict_round_trip() -> None:
    """load_experiment(exp.to_dict()) gives the same experiment, and the dict survives YAML."""
    experiment = load_experiment(base_config(schedule={"warmup_epochs": 1.5, "off_last_epochs": "close_mosaic"}))
    plain = yaml.safe_load(yaml.safe_dump(experiment.to_dict()))
    assert load_experiment(plain) == experiment


def test_relative_paths_kept_as_written(tmp_path: Path) -> None:
    """model, data and teacher values from a YAML file are not resolved against its folder."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(base_config()))
    experiment = load_experiment(path)
    assert experiment.train_args["model"] == "yolov8n.yaml" and experiment.teacher == "weights/teacher.pt"


def test_schedule_ramp() -> None:
    """The KD factor ramps linearly over warmup_epochs, then stays at 1."""
    schedule = Schedule(warmup_epochs=2)
    assert [schedule.factor(progress, 10, 0) for progress in (0, 0.5, 1, 2, 5)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_schedule_no_warmup_is_full_weight() -> None:
    """With warmup_epochs=0 the factor is 1 from the first step."""
    assert Schedule().factor(0.0, 10, 10) == 1.0


def test_schedule_off_last_epochs() -> None:
    """KD is off from total_epochs - off_last_epochs on."""
    schedule = Schedule(off_last_epochs=3)
    assert [schedule.factor(progress, 10, 0) for progress in (6.9, 7.0, 9.5)] == [1.0, 0.0, 0.0]


def test_schedule_follows_close_mosaic() -> None:
    """off_last_epochs='close_mosaic' switches KD off when mosaic closes."""
    schedule = Schedule(off_last_epochs="close_mosaic")
    assert [schedule.factor(progress, 10, 2) for progress in (7.9, 8.0)] == [1.0, 0.0]
    assert schedule.factor(9.9, 10, 0) == 1.0


@pytest.mark.parametrize("schedule", [{"warmup_epochs": -1}, {"off_last_epochs": -1}, {"off_last_epochs": "never"}])
def test_schedule_invalid_values(schedule: dict[str, Any]) -> None:
    """Negative warmup, negative off epochs and unknown strings are rejected at their path."""
    assert error_of(base_config(schedule=schedule)).startswith(f"schedule.{next(iter(schedule))}:")


def test_schedule_that_disables_kd_rejected() -> None:
    """A schedule whose off phase covers the whole run is rejected when loaded."""
    message = error_of(base_config(epochs=2, close_mosaic=10, schedule={"off_last_epochs": "close_mosaic"}))
    assert message.startswith("schedule.off_last_epochs:") and "whole run" in message


def test_balance_section_is_validated_and_round_trips():
    """`balance:` takes weight_mode auto|paper and batches >= 1; errors name the key; to_dict spells it out."""
    base = {"teacher": "t.pt", "distill": [{"loss": "bckd", "grad_share": 0.5}]}
    experiment = load_experiment({**base, "balance": {"weight_mode": "paper", "batches": 2}})
    assert experiment.balance.weight_mode == "paper" and experiment.balance.batches == 2
    assert experiment.distill[0].params.grad_share == 0.5
    assert load_experiment(experiment.to_dict()).to_dict() == experiment.to_dict()
    with pytest.raises(ConfigError, match=r"^balance.weight_mode: weight_mode='tuned' is not one of"):
        load_experiment({**base, "balance": {"weight_mode": "tuned"}})
    with pytest.raises(ConfigError, match=r"^balance.batch: unknown key .*did you mean 'batches'"):
        load_experiment({**base, "balance": {"batch": 2}})
    with pytest.raises(ConfigError, match=r"^distill.0.grad_share: grad_share=0.0 must be > 0"):
        load_experiment({**base, "distill": [{"loss": "bckd", "grad_share": 0.0}]})
