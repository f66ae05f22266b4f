"""The KD state file beside last.pt: exact round trip, atomic writes, and errors that say what to do."""

from __future__ import annotations

import pytest
import torch

from yolokd import __version__
from yolokd.engine.checkpoint import KD_STATE_FORMAT, kd_state_path, load_kd_state, save_kd_state


def save_example(path, **changes):
    state = {
        "epoch": 3,
        "experiment": {"teacher": "t.pt", "distill": [{"loss": "bckd", "cls_weight": 1.0}]},
        "losses": {"bckd_cls_bckd_loc.aligner.convs.0.weight": torch.arange(6.0).view(2, 3, 1, 1)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0]}]},
        "balance": {"scales": {"bckd_cls_bckd_loc": 0.1 + 0.2}},  # a float with no short decimal form
    }
    state.update(changes)
    save_kd_state(path, **state)
    return state


def test_kd_state_path_is_beside_last_pt(tmp_path):
    """weights/last.pt -> weights/kd_state.pt."""
    assert kd_state_path(tmp_path / "weights" / "last.pt") == tmp_path / "weights" / "kd_state.pt"


def test_round_trip_is_exact(tmp_path):
    """Every field reads back as written: tensors equal, floats bit for bit, plus the format and yolokd version."""
    path = kd_state_path(tmp_path / "last.pt")
    written = save_example(path)
    state = load_kd_state(path)
    assert state["format"] == KD_STATE_FORMAT and state["yolokd"] == __version__
    assert state["epoch"] == 3 and state["experiment"] == written["experiment"]
    assert state["optimizer"] == written["optimizer"]
    assert state["balance"]["scales"]["bckd_cls_bckd_loc"] == 0.1 + 0.2
    (name, tensor), = written["losses"].items()  # fmt: skip
    assert torch.equal(state["losses"][name], tensor)


def test_write_is_atomic_and_replaces_the_previous_state(tmp_path):
    """A second save replaces the first and leaves no temporary file behind."""
    path = kd_state_path(tmp_path / "last.pt")
    save_example(path)
    save_example(path, epoch=4, optimizer=None, balance=None)
    assert [p.name for p in tmp_path.iterdir()] == ["kd_state.pt"]
    state = load_kd_state(path)
    assert (state["epoch"], state["optimizer"], state["balance"]) == (4, None, None)


def test_missing_state_names_the_ultralytics_alternative(tmp_path):
    """No kd_state.pt (a run not trained by yolokd) -> FileNotFoundError saying how to continue it without KD."""
    with pytest.raises(FileNotFoundError, match=r"no yolokd KD state at .*'yolo train resume model=<last.pt>'"):
        load_kd_state(tmp_path / "kd_state.pt")


def test_damaged_state_is_one_clear_error(tmp_path):
    """Bytes that are no torch file -> RuntimeError naming the file."""
    path = tmp_path / "kd_state.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RuntimeError, match=r"KD state '.*kd_state\.pt' could not be read"):
        load_kd_state(path)


@pytest.mark.parametrize("content", [{"epoch": 1}, {"format": "yolokd.kd_state/0"}, [1, 2]], ids=str)
def test_other_torch_files_are_refused(content, tmp_path):
    """A readable torch file without the current format tag is not taken for a KD state."""
    path = tmp_path / "kd_state.pt"
    torch.save(content, path)
    with pytest.raises(RuntimeError, match=f"not a yolokd KD state file \\(expected format {KD_STATE_FORMAT}\\)"):
        load_kd_state(path)
