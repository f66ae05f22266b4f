"""Load the shared modules of ``yolokd/export/`` by path: no yolokd package, no torch, no Ultralytics on the device.

``stats``, ``tegrastats``, ``hardware``, ``plan`` and ``trt_compat`` are standard library (+ NumPy) only. They are
found beside this file (a flat copy) or in the repository's ``yolokd/export/``, and loaded once per process.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
SEARCH = (HERE, HERE.parents[1] / "yolokd" / "export")
"""Where the shared modules are: beside this file (a flat copy), or the repository's yolokd/export/."""


def vendored(name: str) -> ModuleType:
    """``yolokd/export/<name>.py`` as module ``yolokd_jetson_<name>`` (the same object on every call)."""
    module_name = f"yolokd_jetson_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    for folder in SEARCH:
        path = folder / f"{name}.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # dataclasses look their module up while the file executes
            spec.loader.exec_module(module)
            return module
    raise ImportError(f"{name}.py not found in {[str(folder) for folder in SEARCH]}: copy yolokd/export/ with deploy/")
