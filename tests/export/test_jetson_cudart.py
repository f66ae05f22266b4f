"""deploy/jetson/cudart.py without a GPU: where libcudart is looked for (the loader, pip's CUDA 13 / 12 wheels, the
CUDA toolkit) and which candidate is loaded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

JETSON = Path(__file__).parents[2] / "deploy" / "jetson"


@pytest.fixture
def cudart(monkeypatch):
    """deploy/jetson/cudart.py (ctypes only)."""
    monkeypatch.syspath_prepend(str(JETSON))
    spec = importlib.util.spec_from_file_location("cudart_under_test", JETSON / "cudart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_libcudart_13_is_found_in_pips_nvidia_folders(cudart, tmp_path):
    """pip's nvidia/cu13/lib/libcudart.so.13 and nvidia/cuda_runtime/lib/libcudart.so.12 are candidates, newest
    first, after the loader's sonames (which include .so.13) and before /usr/local/cuda."""
    for sub, name in (("cu13/lib", "libcudart.so.13"), ("cuda_runtime/lib", "libcudart.so.12")):
        (tmp_path / "site" / "nvidia" / sub).mkdir(parents=True)
        (tmp_path / "site" / "nvidia" / sub / name).write_bytes(b"")
    (tmp_path / "site" / "nvidia" / "cu13" / "lib" / "libcudart_static.a").write_bytes(b"")
    folders = cudart.pip_nvidia_folders([str(tmp_path / "site"), str(tmp_path / "empty")])
    assert folders == [tmp_path / "site" / "nvidia"]
    candidates = cudart.library_candidates(folders)
    pip13 = str(tmp_path / "site" / "nvidia" / "cu13" / "lib" / "libcudart.so.13")
    pip12 = str(tmp_path / "site" / "nvidia" / "cuda_runtime" / "lib" / "libcudart.so.12")
    assert "libcudart.so.13" in candidates[:4]
    assert candidates[4:] == [pip13, pip12, "/usr/local/cuda/lib64/libcudart.so"]


def test_load_cudart_takes_the_first_that_loads(cudart, tmp_path):
    """Candidates that fail to load are skipped; none loading is one OSError listing them."""
    loaded = []

    def loader(name: str):
        if not name.endswith(".so.13"):
            raise OSError(name)
        loaded.append(name)
        return name

    assert cudart.load_cudart(["libcudart.so", "/x/nvidia/cu13/lib/libcudart.so.13"], loader) == (
        "/x/nvidia/cu13/lib/libcudart.so.13"
    )
    with pytest.raises(OSError, match=r"tried \['libcudart.so', 'libcudart.so.12'\]"):
        cudart.load_cudart(["libcudart.so", "libcudart.so.12"], loader)
