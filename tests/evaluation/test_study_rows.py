"""Study rows from ``methods=``: baseline first, combinations, a cfg's parameters, native last, clear errors."""

from __future__ import annotations

import pytest

from yolokd.evaluation.study import build_rows, parse_list


def test_rows_order_and_combination():
    """baseline, then each method (a+b is one row with two entries), then Ultralytics' native row."""
    rows = build_rows(["bckd", "bckd+mimic"], [], native=True)
    assert [row.name for row in rows] == ["baseline", "bckd", "bckd+mimic", "ultralytics_native"]
    assert rows[2].distill == [{"loss": "bckd"}, {"loss": "mimic"}] and rows[3].native and rows[0].distill == []


def test_cfg_entry_lends_its_parameters():
    """A method named in the cfg's distill list runs with the cfg's parameters, others with defaults."""
    rows = build_rows(["bckd", "mimic"], [{"loss": "bckd", "loc_weight": 2.0}], native=False)
    assert rows[1].distill == [{"loss": "bckd", "loc_weight": 2.0}] and rows[2].distill == [{"loss": "mimic"}]


def test_unknown_method_suggests():
    """A misspelt method is refused with the closest registered name."""
    with pytest.raises(ValueError, match="did you mean 'bckd'"):
        build_rows(["bkcd"], [], native=False)


def test_parse_list_forms():
    """Comma strings, lists and single numbers all become lists; an empty value (methods=) is no item."""
    assert parse_list("0,1, 2", int) == [0, 1, 2] and parse_list(3, int) == [3] and parse_list(["a", "b"]) == ["a", "b"]
    assert parse_list(None) == [] and parse_list("") == [] and parse_list([]) == []


def test_file_stamp_follows_content_not_mtime(tmp_path):
    """The cache key of a teacher or data file survives a checkout that rewrites its mtime, not an edit."""
    import os

    from yolokd.evaluation.study import _file_stamp

    path = tmp_path / "teacher.pt"
    path.write_bytes(b"weights-a")
    stamp = _file_stamp(str(path))
    os.utime(path, ns=(1, 1))
    assert _file_stamp(str(path)) == stamp
    path.write_bytes(b"weights-b")  # same size, other content
    assert _file_stamp(str(path)) != stamp
    assert _file_stamp(str(tmp_path / "missing.pt")) is None


def test_the_placebo_row_is_bckd_at_a_negligible_share_and_opt_in():
    from yolokd.evaluation.study import PLACEBO

    assert [row.name for row in build_rows(["crosskd"], [], native=False)] == ["baseline", "crosskd"]
    rows = build_rows(["crosskd"], [], native=True, placebo=True)
    assert [row.name for row in rows] == ["baseline", "crosskd", "ultralytics_native", PLACEBO]
    assert rows[-1].distill == [{"loss": "bckd", "grad_share": 1e-6}] and not rows[-1].native
