"""tegrastats parsing on recorded Orin Nano / NX / AGX (and Xavier-era) lines, and energy per frame."""

from __future__ import annotations

import pytest

from yolokd.export import tegrastats

ORIN_NANO = (
    "11-21-2024 10:00:01 RAM 2448/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@1510,1%@1510,0%@1510,"
    "0%@1510,0%@1510,0%@1510] EMC_FREQ 0%@2133 GR3D_FREQ 37%@[624] NVENC off NVDEC off NVJPG off NVJPG1 off VIC off "
    "OFA off APE 200 cpu@46.593C soc2@45.218C soc0@45.781C gpu@46.375C tj@47.281C soc1@45.875C "
    "VDD_IN 4913mW/4913mW VDD_CPU_GPU_CV 481mW/481mW VDD_SOC 1442mW/1442mW"
)
ORIN_NX = (
    "03-02-2025 14:22:10 RAM 5211/15656MB (lfb 45x4MB) SWAP 0/7828MB (cached 0MB) CPU [12%@1984,9%@1984,7%@1984,"
    "5%@1984,3%@1984,4%@1984,2%@1984,1%@1984] EMC_FREQ 18%@3199 GR3D_FREQ 98%@[918] NVENC off NVDEC off NVJPG off "
    "NVJPG1 off VIC off OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 200 cpu@52.1C soc2@49.6C soc0@50.2C "
    "gpu@53.9C tj@53.9C soc1@49.8C VDD_IN 14721mW/13980mW VDD_CPU_GPU_CV 7321mW/6870mW VDD_SOC 3110mW/3050mW"
)
AGX_ORIN = (
    "RAM 9061/30536MB (lfb 3x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,0%@729,0%@729,0%@729,off,off,off,off,"
    "0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 99%@[1300,0] VIC_FREQ 729 APE 174 CV0@-256C "
    "CPU@43.281C SOC2@40.375C SOC0@41.5C CV1@-256C GPU@40.093C tj@43.281C SOC1@40.031C CV2@-256C "
    "VDD_GPU_SOC 3970mW/3970mW VDD_CPU_CV 794mW/794mW VIN_SYS_5V0 3731mW/3731mW VDDQ_VDD2_1V8AO 605mW/605mW"
)
XAVIER_NX = (
    "RAM 1566/3964MB (lfb 473x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [4%@102,2%@102,1%@102,"
    "0%@102] EMC_FREQ 0%@204 GR3D_FREQ 0%@76 APE 25 PLL@29.5C CPU@32.5C PMIC@100C GPU@30C AO@38C thermal@31C "
    "POM_5V_IN 2190/2190 POM_5V_GPU 40/40 POM_5V_CPU 335/335"
)


def test_orin_nano_input_rail_is_the_total():
    """Orin Nano: three rails, VDD_IN is the module total, GPU load and clock, time stamp."""
    sample = tegrastats.parse_line(ORIN_NANO)
    assert sample.rails_mw == {"VDD_IN": 4913.0, "VDD_CPU_GPU_CV": 481.0, "VDD_SOC": 1442.0}
    assert (sample.total_mw, sample.total_source) == (4913.0, "VDD_IN")
    assert (sample.gpu_util, sample.gpu_mhz, sample.timestamp) == (37.0, 624.0, "11-21-2024 10:00:01")


def test_orin_nx_uses_instantaneous_not_average():
    """Orin NX: the first number of `now/average` is used."""
    sample = tegrastats.parse_line(ORIN_NX)
    assert sample.total_mw == 14721.0 and sample.rails_mw["VDD_CPU_GPU_CV"] == 7321.0
    assert (sample.gpu_util, sample.gpu_mhz) == (98.0, 918.0)


def test_agx_orin_has_no_input_rail_total_is_the_sum():
    """AGX Orin: no VDD_IN, the total is the sum of its four rails; RAM/SWAP are never rails."""
    sample = tegrastats.parse_line(AGX_ORIN)
    assert set(sample.rails_mw) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert sample.total_mw == 3970 + 794 + 3731 + 605 and sample.total_source.startswith("sum of")
    assert (sample.gpu_util, sample.gpu_mhz, sample.timestamp) == (99.0, 1300.0, None)


def test_xavier_format_without_units():
    """Older format `POM_5V_IN 2190/2190` (no mW): POM_5V_IN is the total."""
    sample = tegrastats.parse_line(XAVIER_NX)
    assert (sample.total_mw, sample.total_source) == (2190.0, "POM_5V_IN") and "IRAM" not in sample.rails_mw


def test_energy_per_frame_arithmetic():
    """Mean of 5 W and 7 W = 6 W; 300 frames in 10 s = 30 FPS -> 200 mJ/frame, 5 FPS/W."""
    samples = [tegrastats.parse_line(f"GR3D_FREQ 50%@[624] VDD_IN {mw}mW/{mw}mW") for mw in (5000, 7000)]
    power = tegrastats.power_summary(samples, frames=300, seconds=10.0)
    assert power["mean_w"] == pytest.approx(6.0)
    assert power["mj_per_frame"] == pytest.approx(200.0)
    assert power["fps_per_w"] == pytest.approx(5.0)
    assert power["rails_mean_w"] == {"VDD_IN": pytest.approx(6.0)} and power["gpu_util_mean"] == 50.0


def test_no_power_lines_give_none():
    """Lines without rails, or no frames, give no power summary (not zero watts)."""
    assert tegrastats.power_summary([tegrastats.parse_line("RAM 1/2MB")], frames=10, seconds=1.0) is None
    assert tegrastats.power_summary([tegrastats.parse_line(ORIN_NANO)], frames=0, seconds=1.0) is None


def test_recorder_without_tegrastats_records_nothing_with_a_reason():
    """Off a Jetson the recorder is a no-op that says why."""
    with tegrastats.TegrastatsRecorder(executable="tegrastats-not-installed") as recorder:
        pass
    assert recorder.samples == [] and "not found" in recorder.reason


def test_window_keeps_only_the_measured_interval():
    """Samples outside [start, end] (warm-up, tail) are left out."""
    recorder = tegrastats.TegrastatsRecorder()
    recorder.samples = [tegrastats.parse_line(ORIN_NANO, received_s=t) for t in (0.5, 1.5, 2.5)]
    assert [s.received_s for s in recorder.window(1.0, 2.0)] == [1.5]
