"""Jetson ``tegrastats`` power rails: parse its lines, record it during a benchmark, energy per frame.

Standard library only (``deploy/jetson/run.py`` loads this file by path, next to ``stats.py``).

Rails by module (instantaneous mW / running average mW, as tegrastats prints them):
    Orin Nano, Orin NX:  VDD_IN (module input: the total), VDD_CPU_GPU_CV, VDD_SOC
    AGX Orin:            VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0, VDDQ_VDD2_1V8AO (no input rail: the total is their sum)
    Xavier / Nano (old): POM_5V_IN (total), POM_5V_GPU, POM_5V_CPU, written ``1234/1300`` without ``mW``
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")
"""Rails that measure the whole module's input power, in order of preference."""
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?\b")
_GPU = re.compile(r"GR3D_FREQ (\d+)%(?:@\[?(\d+))?")
_TIMESTAMP = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})")
_NOT_RAILS = {"RAM", "SWAP", "LFB", "IRAM"}


@dataclass
class TegraSample:
    """One tegrastats line.

    Attributes:
        rails_mw (dict[str, float]): instantaneous power per rail, mW.
        total_mw (float | None): module power, mW: the input rail where the module has one, else the sum of rails.
        total_source (str): which rail gave the total, or "sum of <rails>".
        gpu_util (float | None): GR3D (GPU) load, percent.
        gpu_mhz (float | None): GPU clock, MHz.
        timestamp (str | None): the line's own time stamp (tegrastats 4.x+ prints one), else None.
        received_s (float | None): time.monotonic() when the recorder read the line.
    """

    rails_mw: dict[str, float]
    total_mw: float | None
    total_source: str
    gpu_util: float | None = None
    gpu_mhz: float | None = None
    timestamp: str | None = None
    received_s: float | None = None


def parse_line(line: str, received_s: float | None = None) -> TegraSample:
    """Parse one tegrastats line (Orin Nano/NX/AGX, Xavier and older formats); a line without rails has total None."""
    rails = {name: float(now) for name, now, _average in _RAIL.findall(line) if name not in _NOT_RAILS}
    total_name = next((name for name in TOTAL_RAILS if name in rails), None)
    if total_name is not None:
        total, source = rails[total_name], total_name
    elif rails:
        total, source = sum(rails.values()), "sum of " + "+".join(rails)
    else:
        total, source = None, "no rails"
    gpu = _GPU.search(line)
    stamp = _TIMESTAMP.match(line.strip())
    return TegraSample(
        rails_mw=rails,
        total_mw=total,
        total_source=source,
        gpu_util=float(gpu.group(1)) if gpu else None,
        gpu_mhz=float(gpu.group(2)) if gpu and gpu.group(2) else None,
        timestamp=stamp.group(1) if stamp else None,
        received_s=received_s,
    )


def power_summary(samples: list[TegraSample], frames: int, seconds: float) -> dict | None:
    """Mean power over the measured window and the energy per frame.

    Args:
        samples (list[TegraSample]): tegrastats samples taken while the frames ran.
        frames (int): images processed in the window (runs x batch).
        seconds (float): wall-clock length of the window.

    Returns:
        (dict | None): mean_w (module), rails_mean_w, mj_per_frame = mean_w x seconds / frames x 1000,
        fps_per_w = frames / seconds / mean_w, gpu_util_mean, samples, total_source; None without power samples.
    """
    powered = [sample for sample in samples if sample.total_mw is not None]
    if not powered or frames <= 0 or seconds <= 0:
        return None
    mean_w = sum(sample.total_mw for sample in powered) / len(powered) / 1000.0
    rail_names = dict.fromkeys(name for sample in powered for name in sample.rails_mw)
    rails_mean_w = {
        name: sum(s.rails_mw.get(name, 0.0) for s in powered) / len(powered) / 1000.0 for name in rail_names
    }
    utils = [sample.gpu_util for sample in powered if sample.gpu_util is not None]
    fps = frames / seconds
    return {
        "mean_w": mean_w,
        "rails_mean_w": rails_mean_w,
        "mj_per_frame": mean_w * seconds / frames * 1000.0,
        "fps_per_w": fps / mean_w if mean_w > 0 else None,
        "gpu_util_mean": sum(utils) / len(utils) if utils else None,
        "samples": len(powered),
        "total_source": powered[0].total_source,
    }


@dataclass
class TegrastatsRecorder:
    """Run ``tegrastats --interval <ms>`` while a benchmark runs (a context manager) and keep its parsed lines.

    ``available`` is False (with ``reason``) where tegrastats is not installed; the recorder then records nothing.
    Only the process this recorder started is stopped on exit.
    """

    interval_ms: int = 100
    executable: str = "tegrastats"
    samples: list[TegraSample] = field(default_factory=list)
    reason: str | None = None
    _process: subprocess.Popen | None = None
    _thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        """Whether tegrastats runs on this machine."""
        return shutil.which(self.executable) is not None

    def __enter__(self) -> TegrastatsRecorder:
        if not self.available:
            self.reason = f"{self.executable} not found (not a Jetson, or not on PATH)"
            return self
        command = [self.executable, "--interval", str(self.interval_ms)]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.samples.append(parse_line(line, time.monotonic()))

    def window(self, start_s: float, end_s: float) -> list[TegraSample]:
        """Samples read between two time.monotonic() stamps (the measured runs, warm-up excluded)."""
        return [s for s in self.samples if s.received_s is not None and start_s <= s.received_s <= end_s]

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
            if self._thread is not None:
                self._thread.join(timeout=5)
