"""Tests for the deterministic synthetic YOLO dataset generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolokd.data import CLASS_NAMES, make_synthetic_dataset

SMALL = {"num_train": 12, "num_val": 4, "imgsz": 64}


def _files(root: Path) -> dict[str, bytes]:
    """All generated images and labels, keyed by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("[il]*/*/*")) if p.is_file()}


def _label_lines(root: Path) -> list[str]:
    """Every label line in both splits."""
    return [line for p in sorted(root.glob("labels/*/*.txt")) for line in p.read_text().splitlines()]


@pytest.fixture
def small_set(tmp_path: Path) -> Path:
    """A small dataset with a fixed seed."""
    return make_synthetic_dataset(tmp_path / "ds", seed=1, **SMALL)


def test_layout(small_set: Path) -> None:
    """The YOLO folder layout, one label file per image, and meta.json exist."""
    root = small_set.parent
    for split, n in (("train", SMALL["num_train"]), ("val", SMALL["num_val"])):
        images = sorted(p.stem for p in (root / "images" / split).glob("*.png"))
        assert len(images) == n
        assert images == sorted(p.stem for p in (root / "labels" / split).glob("*.txt"))
    assert json.loads((root / "meta.json").read_text())["params"]["seed"] == 1


def test_same_seed_is_byte_identical(tmp_path: Path) -> None:
    """Same arguments in two folders give byte-identical images and labels."""
    a = make_synthetic_dataset(tmp_path / "a", seed=5, **SMALL).parent
    b = make_synthetic_dataset(tmp_path / "b", seed=5, **SMALL).parent
    fa, fb = _files(a), _files(b)
    assert len(fa) == 2 * (SMALL["num_train"] + SMALL["num_val"])
    assert fa == fb


def test_different_seed_gives_different_images(tmp_path: Path) -> None:
    """Different seeds give different images."""
    a = make_synthetic_dataset(tmp_path / "a", seed=5, **SMALL).parent
    b = make_synthetic_dataset(tmp_path / "b", seed=6, **SMALL).parent
    pa, pb = sorted(a.glob("images/train/*.png")), sorted(b.glob("images/train/*.png"))
    assert all(x.read_bytes() != y.read_bytes() for x, y in zip(pa, pb, strict=True))


def test_train_and_val_do_not_share_images(small_set: Path) -> None:
    """Train and val come from different random streams, so no image appears in both."""
    root = small_set.parent
    train = {p.read_bytes() for p in root.glob("images/train/*.png")}
    assert not train & {p.read_bytes() for p in root.glob("images/val/*.png")}


def test_label_lines_are_valid_yolo(small_set: Path) -> None:
    """Every label line is `cls cx cy w h` with a valid class, coordinates in [0, 1] and positive size."""
    lines = _label_lines(small_set.parent)
    assert lines
    for line in lines:
        fields = line.split()
        assert len(fields) == 5
        assert 0 <= int(fields[0]) < len(CLASS_NAMES)
        cx, cy, w, h = map(float, fields[1:])
        assert all(0.0 <= v <= 1.0 for v in (cx, cy, w, h))
        assert w > 0 and h > 0
        assert cx - w / 2 >= -1e-5 and cx + w / 2 <= 1 + 1e-5 and cy - h / 2 >= -1e-5 and cy + h / 2 <= 1 + 1e-5


def test_data_yaml_passes_ultralytics_check(small_set: Path) -> None:
    """Ultralytics' own dataset check accepts data.yaml and reports our classes."""
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(small_set))
    assert data["nc"] == len(CLASS_NAMES)
    assert [data["names"][i] for i in range(len(CLASS_NAMES))] == list(CLASS_NAMES)
    assert Path(data["train"]) == small_set.parent / "images" / "train"


def test_cache_does_not_rewrite(small_set: Path) -> None:
    """A second call with the same parameters returns the same yaml without touching any file."""
    root = small_set.parent
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert make_synthetic_dataset(root, seed=1, **SMALL) == small_set
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def test_changed_params_regenerate(small_set: Path) -> None:
    """Changing a parameter regenerates the set and removes images that no longer belong to it."""
    root = small_set.parent
    make_synthetic_dataset(root, seed=1, num_train=3, num_val=2, imgsz=48)
    assert len(list(root.glob("images/train/*.png"))) == 3
    assert json.loads((root / "meta.json").read_text())["params"]["imgsz"] == 48


def test_interrupted_generation_is_not_cached(small_set: Path) -> None:
    """Without meta.json (written last) the set counts as incomplete and is regenerated."""
    root = small_set.parent
    (root / "meta.json").unlink()
    (root / "images" / "train" / "000000.png").unlink()
    make_synthetic_dataset(root, seed=1, **SMALL)
    assert (root / "images" / "train" / "000000.png").exists() and (root / "meta.json").exists()


def test_refuses_to_delete_foreign_folders(tmp_path: Path) -> None:
    """An images/ folder the generator did not create is never deleted."""
    (tmp_path / "images").mkdir()
    with pytest.raises(FileExistsError):
        make_synthetic_dataset(tmp_path, seed=1, **SMALL)


def test_scene_distribution_has_empty_and_crowded_images(tmp_path: Path) -> None:
    """A 40-image set has at least one empty image and one with three or more objects."""
    root = make_synthetic_dataset(tmp_path / "ds", num_train=36, num_val=4, imgsz=64, seed=0).parent
    counts = [len(p.read_text().splitlines()) for p in root.glob("labels/*/*.txt")]
    assert len(counts) == 40
    assert min(counts) == 0 and max(counts) >= 3


def test_generates_200_images_at_96px(tmp_path: Path) -> None:
    """A 200-image set at 96 px is generated completely."""
    root = make_synthetic_dataset(tmp_path / "ds", num_train=160, num_val=40, imgsz=96, seed=2).parent
    assert len(list(root.glob("images/*/*.png"))) == 200
