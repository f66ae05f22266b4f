"""The few CUDA runtime calls the Jetson runner needs, through ctypes on ``libcudart`` (no torch, no cuda-python).

Device buffers, pinned host buffers, a stream, async copies and events: enough to feed a TensorRT execution
context and time it. Every call checks its status and raises with CUDA's own error string.
"""

from __future__ import annotations

import ctypes
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2  # cudaMemcpyKind
SONAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
"""Found by the dynamic loader (LD_LIBRARY_PATH, ldconfig: JetPack, a CUDA toolkit) or already loaded."""
PIP_FOLDERS = ("cu13/lib", "cuda_runtime/lib")
"""Inside pip's ``nvidia`` namespace package: CUDA 13 wheels put libcudart.so.13 in ``nvidia/cu13/lib``, the
``nvidia-cuda-runtime-cu12`` / ``-cu11`` wheels libcudart.so.12 / .so.11.0 in ``nvidia/cuda_runtime/lib``."""
SYSTEM_PATHS = ("/usr/local/cuda/lib64/libcudart.so",)


def pip_nvidia_folders(paths: Iterable[str] | None = None) -> list[Path]:
    """The ``nvidia`` folders of pip's CUDA wheels on ``paths`` (default sys.path), found without importing them."""
    folders = []
    for entry in sys.path if paths is None else paths:
        folder = Path(entry or ".") / "nvidia"
        if folder.is_dir() and folder not in folders:
            folders.append(folder)
    return folders


def _soname_version(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name.split(".so", 1)[1]))


def library_candidates(nvidia_folders: Iterable[Path]) -> list[str]:
    """Where to look for libcudart, in order: the loader's sonames, pip's wheels (newest first), the CUDA toolkit."""
    found = []
    for folder in nvidia_folders:
        for sub in PIP_FOLDERS:
            libraries = (folder / sub).glob("libcudart.so.[0-9]*")
            found += sorted((p for p in libraries if p.is_file()), key=_soname_version, reverse=True)
    return [*SONAMES, *(str(path) for path in found), *SYSTEM_PATHS]


def load_cudart(candidates: Iterable[str], loader: Callable[[str], ctypes.CDLL] = ctypes.CDLL) -> ctypes.CDLL:
    """The first candidate that loads; OSError naming every one tried otherwise."""
    tried = []
    for name in candidates:
        try:
            return loader(name)
        except OSError:
            tried.append(name)
    raise OSError(
        f"libcudart not found (tried {tried}); is CUDA installed (JetPack, a CUDA toolkit or pip's nvidia-*)?"
    )


class CudaRuntime:
    """A handle on libcudart with typed signatures (pointers and sizes as 64-bit values)."""

    def __init__(self) -> None:
        self.lib = load_cudart(library_candidates(pip_nvidia_folders()))
        pointer, size, handle = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p
        signatures = {
            "cudaMalloc": [ctypes.POINTER(pointer), size],
            "cudaMallocHost": [ctypes.POINTER(pointer), size],
            "cudaFree": [pointer],
            "cudaFreeHost": [pointer],
            "cudaMemcpyAsync": [pointer, pointer, size, ctypes.c_int, handle],
            "cudaStreamCreate": [ctypes.POINTER(handle)],
            "cudaStreamSynchronize": [handle],
            "cudaEventCreate": [ctypes.POINTER(handle)],
            "cudaEventRecord": [handle, handle],
            "cudaEventSynchronize": [handle],
            "cudaEventElapsedTime": [ctypes.POINTER(ctypes.c_float), handle, handle],
            "cudaMemGetInfo": [ctypes.POINTER(size), ctypes.POINTER(size)],
            "cudaSetDevice": [ctypes.c_int],
        }
        for name, argtypes in signatures.items():
            function = getattr(self.lib, name)
            function.argtypes, function.restype = argtypes, ctypes.c_int
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p
        self.lib.cudaGetErrorString.argtypes = [ctypes.c_int]

    def check(self, status: int, call: str) -> None:
        """Raise RuntimeError naming the call and CUDA's message for a non-zero status."""
        if status != 0:
            raise RuntimeError(f"{call}: CUDA error {status} ({self.lib.cudaGetErrorString(status).decode()})")

    def set_device(self, index: int) -> None:
        """Make GPU ``index`` current for this thread (buffers, streams and the engine's context live there)."""
        self.check(self.lib.cudaSetDevice(index), "cudaSetDevice")

    def malloc(self, nbytes: int) -> int:
        """Device buffer of nbytes; returns its address."""
        address = ctypes.c_void_p()
        self.check(self.lib.cudaMalloc(ctypes.byref(address), nbytes), "cudaMalloc")
        return address.value or 0

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A page-locked host array (fast, async-capable copies); freed with ``free_host(array.ctypes.data)``."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        address = ctypes.c_void_p()
        self.check(self.lib.cudaMallocHost(ctypes.byref(address), nbytes), "cudaMallocHost")
        buffer = (ctypes.c_byte * nbytes).from_address(address.value)
        return np.frombuffer(buffer, dtype=dtype).reshape(shape)

    def free(self, address: int) -> None:
        self.check(self.lib.cudaFree(address), "cudaFree")

    def free_host(self, address: int) -> None:
        self.check(self.lib.cudaFreeHost(address), "cudaFreeHost")

    def copy(self, destination: int, source: int, nbytes: int, kind: int, stream: int) -> None:
        """Asynchronous copy on ``stream`` (HOST_TO_DEVICE or DEVICE_TO_HOST)."""
        self.check(self.lib.cudaMemcpyAsync(destination, source, nbytes, kind, stream), "cudaMemcpyAsync")

    def stream(self) -> int:
        handle = ctypes.c_void_p()
        self.check(self.lib.cudaStreamCreate(ctypes.byref(handle)), "cudaStreamCreate")
        return handle.value or 0

    def synchronize(self, stream: int) -> None:
        self.check(self.lib.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def event(self) -> int:
        handle = ctypes.c_void_p()
        self.check(self.lib.cudaEventCreate(ctypes.byref(handle)), "cudaEventCreate")
        return handle.value or 0

    def record(self, event: int, stream: int) -> None:
        self.check(self.lib.cudaEventRecord(event, stream), "cudaEventRecord")

    def elapsed_ms(self, start: int, end: int) -> float:
        """GPU time between two recorded events, ms (waits for ``end``)."""
        self.check(self.lib.cudaEventSynchronize(end), "cudaEventSynchronize")
        milliseconds = ctypes.c_float()
        self.check(self.lib.cudaEventElapsedTime(ctypes.byref(milliseconds), start, end), "cudaEventElapsedTime")
        return float(milliseconds.value)

    def memory_used(self) -> int:
        """Device memory in use now, bytes (on a Jetson: the shared DRAM used by everything)."""
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.check(self.lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)), "cudaMemGetInfo")
        return total.value - free.value
