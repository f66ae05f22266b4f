"""``yolokd benchmark``: per-stage latency of ``.pt`` / ``.onnx`` / ``.engine`` models, sweeps in one command.

Each setting (model x precision x batch) runs iterations of: preprocess (letterbox of real BGR images already in
memory, RGB CHW, to the device, /255), inference (the runtime call with its copies), postprocess (Ultralytics' NMS
and box rescaling to the original images), timed with ``time.perf_counter`` and synchronised on CUDA; CUDA events
time the inference on the GPU where there is one. First a time-based warm-up, then at least ``runs`` iterations and
``seconds`` seconds. Statistics come from ``stats.latency_stats`` over the recorded samples (kept in the JSON).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolokd.export import hardware, images, plan, runners, stats

VERSIONED = ("yolokd", "ultralytics", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "numpy")


@dataclass
class BenchmarkResult:
    """Where the report went and what it holds.

    Attributes:
        folder (Path): the run folder (``benchmark.{json,csv,md,png}``).
        report (dict): the report (schema ``stats.SCHEMA``).
        files (dict[str, Path]): json, csv, md and (with plot) png.
    """

    folder: Path
    report: dict[str, Any]
    files: dict[str, Path]


def as_list(value: Any, cast: type = str) -> list:
    """``"1,8"`` / ``[1, 8]`` / ``8`` -> ``[1, 8]`` / ``[1, 8]`` / ``[8]`` (one setting per element)."""
    if isinstance(value, (list, tuple)):
        return [cast(item) for item in value]
    return [cast(item.strip()) for item in str(value).split(",") if item.strip()]


def run_benchmark(
    model: str | list[str],
    imgsz: int | list[int] = 640,
    batch: int | str | list[int] = 1,
    precision: str | list[str] | None = None,
    device: str = "cpu",
    provider: str = "auto",
    threads: int | None = None,
    warmup: float = 2.0,
    runs: int = 50,
    seconds: float = 5.0,
    source: str | None = None,
    conf: float = 0.25,
    iou: float = 0.7,
    project: str = "runs/benchmark",
    name: str = "benchmark",
    plot: bool = True,
) -> BenchmarkResult:
    """Benchmark every (model, precision, batch) setting; write ``<project>/<name>/benchmark.{json,csv,md,png}``.

    Args:
        model: one model or a comma list (.pt, .onnx, .engine, .plan).
        imgsz: input side or [height, width].
        batch: batch size or a comma list (a batch sweep).
        precision: fp32 / fp16 or a comma list, for .pt models (exports run at the precision they were built with).
        device: cpu or a CUDA index; provider: onnxruntime provider (auto, cpu, cuda, tensorrt); threads: CPU
            threads of torch and onnxruntime (None = their default).
        warmup: warm-up seconds; runs, seconds: measure at least this many iterations and at least this long.
        source: folder or data YAML's val split of real images (default: Ultralytics' bundled photos).
        conf, iou: NMS thresholds of the postprocess stage.
    """
    models = [Path(path) for path in as_list(model)]
    batches = as_list(batch, int)
    precisions = as_list(precision) if precision else ["fp32"]
    height, width = images.image_size(imgsz)
    frames = images.read_images(images.pick(_source_images(source), 16))
    if threads:  # the pre/postprocessing torch ops too, not only a .pt model's forward
        torch.set_num_threads(int(threads))
    environment = benchmark_environment(device)
    rows = []
    settings = [(path, wanted) for path in models for wanted in (precisions if path.suffix == ".pt" else [None])]
    for path, wanted in settings:  # an export runs at the precision it was built with: one setting per batch
        setting = {"model": str(path), "format": path.suffix[1:], "precision": wanted, "imgsz": [height, width]}
        try:
            runner = runners.open_runner(path, device, wanted or "fp32", provider, threads)
        except (ValueError, plan.TensorRTUnavailableError) as error:
            rows += [stats.skipped_row(str(error), batch=size, **setting) for size in batches]
            continue
        setting.update(runtime=runner.runtime, provider=runner.provider, precision=runner.precision)
        for size in batches:
            reason = runner.why_not(size, (height, width))
            if reason:
                rows.append(stats.skipped_row(reason, batch=size, **setting))
                continue
            rows.append(
                measure(runner, frames, size, (height, width), warmup, runs, seconds, conf, iou, setting, environment)
            )
    report = stats.make_report(rows, environment, tool="yolokd benchmark")
    folder = Path(project) / name
    files = stats.write_report(report, folder)
    if plot:
        from yolokd.export.plots import plot_benchmark

        files["png"] = plot_benchmark(report, folder / "benchmark.png")
    return BenchmarkResult(folder, report, files)


def _source_images(source: str | None) -> list[Path]:
    if source is None:
        return images.default_images()
    path = Path(source)
    if path.suffix in {".yaml", ".yml"}:
        return images.split_images(path, "val")
    from ultralytics.data.utils import IMG_FORMATS

    found = sorted(p for p in path.rglob("*") if p.suffix[1:].lower() in IMG_FORMATS) if path.is_dir() else [path]
    if not found:
        raise FileNotFoundError(f"source: no images in {source}")
    return found


def benchmark_environment(device: str) -> dict[str, Any]:
    """Device, host, versions, threads, power mode and load average (``stats.ENVIRONMENT_KEYS`` and more)."""
    base = hardware.base_environment()
    cuda = str(device).isdigit() or str(device).startswith("cuda")
    index = str(device).rsplit(":", 1)[-1]
    gpu_name = torch.cuda.get_device_name(int(index) if index.isdigit() else 0) if cuda else None
    label = hardware.device_label(gpu_name, base["jetson_model"], str(base["power_mode"])) if cuda else None
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except ImportError:
        providers = []
    return {
        "device": (base["jetson_model"] or gpu_name) if cuda else base["cpu"],
        "device_kind": ("jetson" if base["jetson_model"] else "cuda") if cuda else "cpu",
        "device_label": label,
        "host": base["host"],
        "cpu": base["cpu"],
        "versions": hardware.package_versions(VERSIONED),
        "torch_threads": torch.get_num_threads(),
        "onnxruntime_providers": providers,
        "power_mode": base["power_mode"],
        "gpu_clocks": hardware.gpu_clocks(int(index) if index.isdigit() else 0) if cuda else None,
        "load_average": base["load_average"],
    }


def preprocess(frames: list[np.ndarray], imgsz: tuple[int, int], device: torch.device) -> torch.Tensor:
    """BGR uint8 images -> (B, 3, h, w) float in [0, 1] on ``device`` (Ultralytics' predictor preprocessing)."""
    batch = torch.from_numpy(images.letterbox(frames, imgsz)).to(device, non_blocking=True)
    return batch.float() / 255


def postprocess(predictions: torch.Tensor, runner: runners.Runner, imgsz, frames, conf: float, iou: float) -> list:
    """Ultralytics' NMS, then boxes rescaled to each original image: per image (N, 6) xyxy, score, class."""
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    detections = non_max_suppression(predictions, conf, iou, max_det=300, nc=runner.nc, end2end=runner.end2end)
    for detection, frame in zip(detections, frames, strict=True):
        detection[:, :4] = scale_boxes(imgsz, detection[:, :4], frame.shape)
    return detections


def time_iteration(runner: runners.Runner, frames: list, imgsz, conf: float, iou: float) -> dict[str, float]:
    """One iteration over ``frames`` (one batch): ms per stage, synchronised on CUDA; CUDA-event GPU time there.

    A runtime that times itself (TensorRT: events around the enqueue on its own stream, ``runner.gpu_ms()``) gives
    the GPU time; torch on CUDA is timed with events on the current stream.
    """
    cuda = runner.device.type == "cuda"
    events = cuda and runner.runtime == "torch"
    start = time.perf_counter()
    inputs = preprocess(frames, imgsz, runner.device)
    if cuda:
        torch.cuda.synchronize(runner.device)
    after_pre = time.perf_counter()
    if events:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
    predictions = runner(inputs)
    if events:
        end.record()
    if cuda:
        torch.cuda.synchronize(runner.device)
    after_inference = time.perf_counter()
    postprocess(predictions, runner, imgsz, frames, conf, iou)
    if cuda:
        torch.cuda.synchronize(runner.device)
    done = time.perf_counter()
    times = {
        "preprocess": 1000 * (after_pre - start),
        "inference": 1000 * (after_inference - after_pre),
        "postprocess": 1000 * (done - after_inference),
        "end_to_end": 1000 * (done - start),
    }
    own_gpu_ms = runner.gpu_ms()
    if own_gpu_ms is not None:
        times["gpu_compute"] = own_gpu_ms
    elif events:
        times["gpu_compute"] = begin.elapsed_time(end)
    return times


def measure(runner, frames, batch, imgsz, warmup_s, min_runs, min_seconds, conf, iou, setting, environment) -> dict:
    """Warm up for ``warmup_s``, then time at least ``min_runs`` iterations and ``min_seconds``; one report row."""
    import psutil

    process = psutil.Process()
    if runner.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runner.device)
    samples: dict[str, list[float]] = {}
    peak_rss = process.memory_info().rss
    counts, durations = [], []
    for budget_runs, budget_s, record in ((1, warmup_s, False), (min_runs, min_seconds, True)):
        count, started = 0, time.perf_counter()
        while count < budget_runs or time.perf_counter() - started < budget_s:
            chosen = [frames[(count * batch + offset) % len(frames)] for offset in range(batch)]
            times = time_iteration(runner, chosen, imgsz, conf, iou)
            peak_rss = max(peak_rss, process.memory_info().rss)
            for stage, value in times.items() if record else ():
                samples.setdefault(stage, []).append(value)
            count += 1
        counts.append(count)
        durations.append(time.perf_counter() - started)
    memory = {"peak_rss_mb": peak_rss / 2**20}
    if runner.device.type == "cuda":
        memory["peak_torch_gpu_mb"] = torch.cuda.max_memory_allocated(runner.device) / 2**20
    if "device_memory_bytes" in runner.extra:
        memory["engine_device_mb"] = runner.extra["device_memory_bytes"] / 2**20
    return stats.make_row(
        samples,
        batch=batch,
        warmup_runs=counts[0],
        warmup_s=durations[0],
        measure_s=durations[1],
        gflops_per_image=model_gflops(runner, imgsz),
        peak_tflops=hardware.peak_tflops(environment.get("device_label"), runner.precision),
        memory=memory,
        **setting,
    )


def model_gflops(runner: runners.Runner, imgsz: tuple[int, int]) -> float | None:
    """GFLOPs per image at imgsz: counted on a .pt, read from the export report next to an export (else None)."""
    if isinstance(runner, runners.TorchRunner):
        from ultralytics.utils.torch_utils import get_flops

        return get_flops(runner.model, list(imgsz)) or None
    report = runners.export_report_of(runner.path)
    if report and list(report["source"]["imgsz"]) == list(imgsz):
        return report["source"]["gflops"]
    return None
