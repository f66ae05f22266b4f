"""The built wheel ships the experiment configs, and an install of it finds them by name from any folder.

Builds from a copy of the sources (nothing is written into the repository) with the installed setuptools, installs
the wheel with ``pip --target`` and runs ``yolokd check`` from an empty folder; about 5 seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from yolokd.config import shipped_configs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the current sources."""
    pytest.importorskip("setuptools")
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "yolokd", source / "yolokd", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist")],
                   check=True, capture_output=True)  # fmt: skip
    (built,) = (root / "dist").glob("yolokd-*.whl")
    return built


def test_wheel_contains_every_shipped_config(wheel):
    """Every yolokd/cfg/*.yaml is in the wheel (pyproject's package-data), and the shipped models too."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"yolokd/cfg/{name}" for name in shipped_configs()} <= names
    assets = ("synthetic_yolov8s.pt", "synthetic_yolov8s_scratch.pt", "synthetic_yolov8n_upstream.pt")
    assert {f"yolokd/assets/{name}" for name in assets} <= names


@pytest.mark.parametrize("written", ["cfg/bckd_yolov8n.yaml", "bckd_yolov8n.yaml"])
def test_installed_wheel_finds_configs_by_name_from_any_folder(wheel, written, tmp_path):
    """`yolokd check cfg/bckd_yolov8n.yaml` (the README's command) works from an empty folder after a wheel install."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)  # fmt: skip
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "YOLO_OFFLINE": "1"}
    code = "import sys, yolokd, yolokd.cli; print(yolokd.__file__); sys.exit(yolokd.cli.main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, "check", written], cwd=folder, env=env,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    installed, header = result.stdout.splitlines()[:2]
    assert Path(installed).is_relative_to(target)  # the wheel's yolokd ran, not this checkout's
    assert header == f"# {target / 'yolokd' / 'cfg' / 'bckd_yolov8n.yaml'}: valid"
