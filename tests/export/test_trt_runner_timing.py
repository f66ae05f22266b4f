"""TensorRT execution on the host without a GPU: the checked, event-timed enqueue of the TrtRunner, and the benchmark
taking a self-timing runtime's GPU time."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from yolokd.export import benchmark, runners


class Recorder:
    """Stands in for a CUDA stream (handle 7), two events and an execution context; logs every call in order."""

    def __init__(self, launched: bool) -> None:
        self.log: list[tuple] = []
        self.stream = SimpleNamespace(cuda_stream=7)
        self.start = SimpleNamespace(record=lambda stream: self.log.append(("start", stream.cuda_stream)))
        self.end = SimpleNamespace(record=lambda stream: self.log.append(("end", stream.cuda_stream)))
        self.context = SimpleNamespace(execute_async_v3=lambda handle: self.log.append(("execute", handle)) or launched)


def test_enqueue_is_bracketed_by_events_on_the_runner_stream():
    """start event, execute_async_v3, end event: all on the runner's stream handle."""
    recorder = Recorder(launched=True)
    runners.enqueue_timed(recorder.context, recorder.stream, recorder.start, recorder.end, "best.engine")
    assert recorder.log == [("start", 7), ("execute", 7), ("end", 7)]


def test_failed_enqueue_raises_naming_the_model():
    """execute_async_v3 returning False raises (it used to be ignored and the outputs returned as they were)."""
    recorder = Recorder(launched=False)
    with pytest.raises(RuntimeError, match=r"best\.engine: TensorRT execute_async_v3 returned False"):
        runners.enqueue_timed(recorder.context, recorder.stream, recorder.start, recorder.end, "best.engine")


class SelfTimedRunner:
    """A CPU stand-in for a runtime that times itself (TensorRT): fixed raw predictions, gpu_ms() = 2.5."""

    device, runtime, nc, end2end = torch.device("cpu"), "tensorrt", 3, False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        boxes = torch.tensor([[32.0, 32.0, 10.0, 10.0]]).T.expand(4, 8)
        scores = torch.full((self.nc, 8), 0.9)
        return torch.cat([boxes, scores])[None].repeat(len(images), 1, 1)

    def gpu_ms(self) -> float:
        return 2.5


def test_benchmark_takes_the_runtimes_own_gpu_time():
    """The benchmark's gpu_compute sample is the runner's event time (not events on the caller's stream)."""
    frames = [np.full((48, 64, 3), 114, np.uint8)]
    times = benchmark.time_iteration(SelfTimedRunner(), frames, (64, 64), conf=0.25, iou=0.7)
    assert times["gpu_compute"] == 2.5
    assert set(times) == {"preprocess", "inference", "postprocess", "end_to_end", "gpu_compute"}
