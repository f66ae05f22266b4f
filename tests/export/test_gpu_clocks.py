"""GPU clocks in the benchmark environment: nvidia-smi's CSV line parsed, and printed in the report."""

from __future__ import annotations

from yolokd.export import hardware, stats


def test_clocks_at_max_and_below():
    """SM clock equal to its maximum reads 'at max'; a lower one says boost is not pinned or the GPU throttles."""
    pinned = hardware.parse_gpu_clocks("1980, 1980, 2619, 2619\n")
    assert pinned == {
        "sm_mhz": 1980,
        "sm_max_mhz": 1980,
        "memory_mhz": 2619,
        "memory_max_mhz": 2619,
        "sm_state": "at max",
    }
    assert hardware.parse_gpu_clocks("345, 1980, 2619, 2619")["sm_state"].startswith("below max")


def test_unreadable_clocks_are_none():
    """No nvidia-smi output, '[N/A]' fields or a short line: None, not a crash."""
    assert hardware.parse_gpu_clocks(None) is None
    assert hardware.parse_gpu_clocks("[N/A], [N/A], 2619, 2619") is None
    assert hardware.parse_gpu_clocks("1980, 1980") is None


def test_report_states_the_clocks():
    """The Markdown environment names the SM and memory clocks when they were read."""
    clocks = hardware.parse_gpu_clocks("1410, 1980, 2619, 2619")
    lines = "\n".join(stats.environment_lines({"device": "NVIDIA H200", "gpu_clocks": clocks}))
    assert "GPU clocks at start: SM 1410 / 1980 MHz (below max" in lines and "memory 2619 / 2619 MHz" in lines
