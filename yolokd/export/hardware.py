"""What machine a benchmark ran on: device names, Jetson power mode, CUDA device via ctypes, known compute peaks.

Standard library only (``deploy/jetson/run.py`` loads this file by path): torch is never imported here.

Peaks are dense (no 2:4 sparsity) and computed as units x operations per clock x clock, at the clock named in each
entry; ``None`` where a precision has no published or derivable figure. A roofline "efficiency" from these is a
compute-roof-only estimate: small detectors at batch 1 are usually latency/memory bound and sit far below it.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

KNOWN_PEAKS: dict[str, dict[str, float | str | None]] = {
    # Jetson Orin GPUs (Ampere, sm_87): FP32 = CUDA cores x 2 x clock; FP16/INT8 = tensor cores x 512 / 1024 ops per
    # clock x clock. NVIDIA's sparse INT8 GPU figures are 2x the INT8 values here (e.g. 40 / 67 / 170 TOPS).
    "Jetson Orin Nano 8GB": {"fp32": 1.28, "fp16": 10.2, "int8": 20.5, "source": "1024 cores, 32 TC @ 625 MHz"},
    "Jetson Orin Nano 8GB Super": {"fp32": 2.09, "fp16": 16.7, "int8": 33.4, "source": "1024 cores, 32 TC @ 1020 MHz"},
    "Jetson Orin Nano 4GB": {"fp32": 0.64, "fp16": 5.1, "int8": 10.2, "source": "512 cores, 16 TC @ 625 MHz"},
    "Jetson Orin NX 16GB": {"fp32": 1.88, "fp16": 15.0, "int8": 30.1, "source": "1024 cores, 32 TC @ 918 MHz"},
    "Jetson AGX Orin 64GB": {"fp32": 5.32, "fp16": 42.6, "int8": 85.2, "source": "2048 cores, 64 TC @ 1300 MHz"},
    # Data-centre and desktop GPUs: NVIDIA datasheets, dense tensor-core figures.
    "H200": {"fp32": 67.0, "fp16": 989.5, "int8": 1979.0, "source": "NVIDIA H200 SXM datasheet (dense)"},
    "H100": {"fp32": 67.0, "fp16": 989.5, "int8": 1979.0, "source": "NVIDIA H100 SXM datasheet (dense)"},
    "A100": {"fp32": 19.5, "fp16": 312.0, "int8": 624.0, "source": "NVIDIA A100 datasheet (dense)"},
    "T4": {"fp32": 8.1, "fp16": 65.0, "int8": 130.0, "source": "NVIDIA T4 datasheet"},
}


def device_label(name: str | None, jetson_model: str | None = None, power_mode: str | None = None) -> str | None:
    """The ``KNOWN_PEAKS`` key for a GPU name (``NVIDIA H200``) or a Jetson model + power mode; None if unknown."""
    if jetson_model:
        model = jetson_model.lower()
        super_mode = "super" in model or "super" in (power_mode or "").lower()
        if "orin nano" in model:
            if _memory_gb() is not None and _memory_gb() < 6:
                return "Jetson Orin Nano 4GB"
            return "Jetson Orin Nano 8GB Super" if super_mode else "Jetson Orin Nano 8GB"
        if "orin nx" in model:
            return "Jetson Orin NX 16GB"
        if "agx orin" in model:
            return "Jetson AGX Orin 64GB"
        return None
    for label in KNOWN_PEAKS:
        if name and not label.startswith("Jetson") and re.search(rf"\b{label}\b", name):
            return label
    return None


def peak_tflops(label: str | None, precision: str) -> float | None:
    """Dense peak TFLOPS (TOPS for int8) of a known device at a precision (fp32 / fp16 / int8), else None."""
    value = KNOWN_PEAKS.get(label or "", {}).get(precision)
    return float(value) if isinstance(value, (int, float)) else None


def _memory_gb() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"MemTotal:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024**2 if match else None


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), with the number of logical cores."""
    name = platform.processor() or platform.machine()
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        name = match.group(1).strip() if match else name
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


def jetson_model() -> str | None:
    """The Jetson module/carrier name from the device tree (e.g. 'NVIDIA Jetson Orin Nano Developer Kit'), else None."""
    try:
        text = Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        return None
    return text if "jetson" in text.lower() else None


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout + done.stderr).strip() if done.returncode == 0 else None


def jetson_power_state() -> dict[str, str | None]:
    """nvpmodel mode (``nvpmodel -q``) and jetson_clocks state (``jetson_clocks --show``, needs root) on a Jetson."""
    query = _run(["nvpmodel", "-q"])
    mode = None
    if query:
        match = re.search(r"NV Power Mode:\s*(\S+)", query)
        mode = match.group(1) if match else query.splitlines()[0]
        mode_id = query.strip().splitlines()[-1].strip()
        mode = f"{mode} (mode {mode_id})" if mode_id.isdigit() else mode
    clocks = _run(["jetson_clocks", "--show"])
    if clocks is None:
        clocks_state = "unknown (jetson_clocks --show needs root or is missing)"
    else:  # the GPU line reads "GPU MinFreq=... MaxFreq=... CurrentFreq=...": pinned when min == max
        gpu = re.search(r"GPU MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", clocks)
        pinned = gpu is not None and gpu.group(1) == gpu.group(2)
        clocks_state = ("on (GPU clock pinned at max)" if pinned else "off") + (
            f", GPU {int(gpu.group(3)) // 1_000_000} MHz" if gpu else ""
        )
    return {"nvpmodel": mode, "jetson_clocks": clocks_state}


def cuda_device_ctypes(index: int = 0) -> dict[str, str] | None:
    """GPU name and compute capability through the CUDA driver library (no torch, no cuda-python); None without one."""
    for library in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(library)
            break
        except OSError:
            continue
    else:
        return None
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), index) != 0:
        return None
    cuda.cuDeviceGetName(name, 256, device)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    return {"gpu_name": name.value.decode(), "compute_capability": f"{major.value}.{minor.value}"}


GPU_CLOCK_FIELDS = ("clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem")
"""nvidia-smi query fields (MHz): current and maximum SM and memory clocks."""


def parse_gpu_clocks(text: str | None) -> dict[str, int | str] | None:
    """One ``nvidia-smi --query-gpu=<GPU_CLOCK_FIELDS> --format=csv,noheader,nounits`` line -> clocks in MHz.

    Returns:
        (dict | None): sm_mhz, sm_max_mhz, memory_mhz, memory_max_mhz and ``sm_state`` ("at max" or "below max:
        boost not pinned, or throttled"); None when the text is missing or unreadable.
    """
    if not text:
        return None
    values = [value.strip() for value in text.strip().splitlines()[0].split(",")]
    if len(values) != len(GPU_CLOCK_FIELDS) or not all(value.isdigit() for value in values):
        return None
    sm, sm_max, memory, memory_max = (int(value) for value in values)
    state = "at max" if sm >= sm_max else "below max: boost not pinned, or throttled"
    return {"sm_mhz": sm, "sm_max_mhz": sm_max, "memory_mhz": memory, "memory_max_mhz": memory_max, "sm_state": state}


def gpu_clocks(index: int = 0) -> dict[str, int | str] | None:
    """Current and maximum clocks of GPU ``index`` from nvidia-smi (None without it, e.g. on a Jetson)."""
    query = f"--query-gpu={','.join(GPU_CLOCK_FIELDS)}"
    return parse_gpu_clocks(_run(["nvidia-smi", query, "--format=csv,noheader,nounits", f"--id={index}"]))


def l4t_release() -> str | None:
    """The Jetson Linux (L4T) release from /etc/nv_tegra_release, e.g. 'R36.4.0' (JetPack 6.1/6.2 are R36.4)."""
    try:
        text = Path("/etc/nv_tegra_release").read_text()
    except OSError:
        return None
    match = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", text)
    return f"R{match.group(1)}.{match.group(2)}" if match else text.splitlines()[0]


def base_environment() -> dict:
    """Host facts every report shares: host string, load average at start, Jetson model and power state."""
    jetson = jetson_model()
    power = jetson_power_state() if jetson else None
    return {
        "host": f"{platform.system()} {platform.release()} {platform.machine()}, Python {platform.python_version()}",
        "cpu": cpu_name(),
        "jetson_model": jetson,
        "l4t": l4t_release() if jetson else None,
        "power_mode": power,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the named distributions (read from metadata, nothing imported); absent ones left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
