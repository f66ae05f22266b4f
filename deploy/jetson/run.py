#!/usr/bin/env python3
"""On-device TensorRT build and benchmark for yolokd exports: needs TensorRT + NumPy only (no torch, no Ultralytics).

    python3 deploy/jetson/run.py build best.onnx                 # FP16 by default, or what best.build.json says
    python3 deploy/jetson/run.py build best.onnx --precision int8 --calib best.calib.npy
    python3 deploy/jetson/run.py bench best.plan --images val_images/ --batch 1 --runs 300 --seconds 20
    python3 deploy/jetson/run.py info                            # device, power mode, TensorRT, known peak

The report has the schema of ``yolokd benchmark`` (``yolokd/export/stats.py`` is loaded by path, not copied), with
the power mode (nvpmodel, jetson_clocks) and tegrastats power (mean W, mJ/frame, FPS/W) added to each row.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from vendor import vendored  # noqa: E402  (after sys.path has this folder)

stats, tegrastats, hardware, plans, trt_compat = (
    vendored(name) for name in ("stats", "tegrastats", "hardware", "plan", "trt_compat")
)
import pipeline  # noqa: E402  (after sys.path has this folder)


def read_json(path: Path) -> dict:
    """A JSON file's content, or {} when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else {}


def device() -> dict:
    """tensorrt_version, gpu_name, compute_capability of this machine (the sidecar's device fields)."""
    return plans.current_device(hardware.cuda_device_ctypes())


def environment() -> dict:
    """The report's environment: Jetson model, L4T, power mode, versions, known peak label, load average."""
    import tensorrt as trt

    base = hardware.base_environment()
    gpu = hardware.cuda_device_ctypes() or {}
    versions = {"tensorrt": trt.__version__, "numpy": np.__version__, "l4t": base["l4t"]}
    try:
        import cv2

        versions["opencv"] = cv2.__version__
    except ImportError:
        pass
    return {
        "device": base["jetson_model"] or gpu.get("gpu_name"),
        "device_kind": "jetson" if base["jetson_model"] else "cuda",
        "device_label": hardware.device_label(gpu.get("gpu_name"), base["jetson_model"], str(base["power_mode"])),
        "gpu": gpu,
        "host": base["host"],
        "cpu": base["cpu"],
        "versions": versions,
        "power_mode": base["power_mode"],
        "load_average": base["load_average"],
    }


def build(args: argparse.Namespace) -> Path:
    """ONNX -> <stem>.plan + <stem>.trt.json; options from the command line, else <stem>.build.json, else FP16."""
    from trt_engine import PlanRunner, build_plan

    onnx = Path(args.onnx)
    recipe = read_json(onnx.with_name(f"{onnx.stem}.build.json"))
    precision = args.precision or recipe.get("precision") or "fp16"
    batch = args.batch or recipe.get("batch") or 1
    imgsz = tuple(args.imgsz or recipe.get("imgsz") or (640, 640))
    calibration = args.calib or (onnx.with_name(recipe["calibration"]) if recipe.get("calibration") else None)
    plan_path = Path(args.out) if args.out else onnx.with_suffix(".plan")
    plan, facts = build_plan(
        onnx,
        precision,
        args.workspace or recipe.get("workspace_gib"),
        batch,
        imgsz,
        bool(recipe.get("dynamic")),
        Path(calibration) if calibration else None,
        Path(args.timing_cache or plan_path.with_name("timing.cache")),
        plan_path.with_name(f"{plan_path.stem}.int8.cache"),
    )
    plan_path.write_bytes(plan)
    runner = PlanRunner(plan, batch, imgsz)
    sidecar = plans.make_sidecar(plan, device(), precision, runner.io(), str(onnx))
    sidecar.update(
        imgsz=list(imgsz),
        batch=batch,
        dynamic=bool(recipe.get("dynamic")),
        **facts,
        power_mode=hardware.jetson_power_state(),
    )
    plans.write_sidecar(plans.sidecar_path(plan_path), sidecar)
    print(f"built {plan_path} ({precision}, {facts['build_seconds']} s) + {plans.sidecar_path(plan_path).name}")
    return plan_path


def load_frames(source: str | None, plan_path: Path, imgsz: tuple[int, int], count: int = 16) -> tuple[list, str]:
    """BGR frames: images of a folder (cv2), else the calibration images next to the plan, else seeded noise."""
    if source:
        import cv2

        files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        frames = [cv2.imread(str(p)) for p in files[:count]]
        if not frames:
            raise FileNotFoundError(f"--images: no .jpg/.png in {source}")
        return frames, f"{len(frames)} images of {source}"
    calibration = plan_path.with_name(f"{plan_path.stem}.calib.npy")
    if calibration.is_file():
        stored = np.load(calibration, mmap_mode="r")[:count]
        return [np.ascontiguousarray(image.transpose(1, 2, 0)[..., ::-1]) for image in stored], calibration.name
    generator = np.random.default_rng(0)
    return [generator.integers(0, 256, (*imgsz, 3), dtype=np.uint8) for _ in range(count)], "random noise (no images)"


def measure(run, preprocess, postprocess, gpu_ms, batch: int, warmup_s: float, min_runs: int, min_seconds: float):
    """Warm up for warmup_s, then time >= min_runs iterations and >= min_seconds; per-stage samples in ms.

    ``preprocess(i)``, ``run()``, ``postprocess(output, i)`` are one iteration's stages; ``gpu_ms()`` the GPU time
    of the last run (or None). Returns (samples, warmup_runs, warmup_seconds, measure_seconds, window).
    """
    samples = {stage: [] for stage in stats.STAGES}
    warmup_runs, started = 0, time.perf_counter()
    while warmup_runs == 0 or time.perf_counter() - started < warmup_s:
        preprocess(warmup_runs)
        postprocess(run(), warmup_runs)
        warmup_runs += 1
    warmup_time = time.perf_counter() - started
    count, window_start = 0, time.monotonic()
    started = time.perf_counter()
    while count < min_runs or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        preprocess(count)
        t1 = time.perf_counter()
        output = run()
        t2 = time.perf_counter()
        postprocess(output, count)
        t3 = time.perf_counter()
        for stage, value in (
            ("preprocess", t1 - t0),
            ("inference", t2 - t1),
            ("postprocess", t3 - t2),
            ("end_to_end", t3 - t0),
        ):
            samples[stage].append(1000 * value)
        gpu = gpu_ms()
        if gpu is not None:
            samples["gpu_compute"].append(gpu)
        count += 1
    return samples, warmup_runs, warmup_time, time.perf_counter() - started, (window_start, time.monotonic())


class Pipeline:
    """One iteration's stages for a plan and a batch: letterbox into the pinned input, run, NMS + rescale."""

    def __init__(self, runner, frames: list[np.ndarray], batch: int, imgsz: tuple[int, int], conf: float, iou: float):
        self.runner, self.frames, self.batch, self.imgsz, self.conf, self.iou = runner, frames, batch, imgsz, conf, iou
        self.end2end = runner.host[runner.output_names[0]].shape[-1] == 6

    def chosen(self, index: int) -> list[np.ndarray]:
        return [self.frames[(index * self.batch + j) % len(self.frames)] for j in range(self.batch)]

    def preprocess(self, index: int) -> np.ndarray:
        return pipeline.preprocess(self.chosen(index), self.imgsz, self.runner.input)

    def postprocess(self, output: np.ndarray, index: int) -> list[np.ndarray]:
        detections = pipeline.nms(output, self.conf, self.iou, end2end=self.end2end)
        frames = self.chosen(index)
        return [pipeline.scale_boxes(self.imgsz, d[:, :4], f.shape) for d, f in zip(detections, frames, strict=True)]


def bench_batch(plan: bytes, batch: int, frames: list, args, setting: dict, device_label, gflops) -> dict:
    """One report row: build the runner for ``batch``, time it while tegrastats records, attach power and memory."""
    from trt_engine import PlanRunner

    runner = PlanRunner(plan, batch, tuple(setting["imgsz"]))
    stages = Pipeline(runner, frames, batch, tuple(setting["imgsz"]), args.conf, args.iou)
    with tegrastats.TegrastatsRecorder(interval_ms=args.tegrastats_interval) as recorder:
        samples, warmup_runs, warmup_s, measure_s, window = measure(
            runner.run,
            stages.preprocess,
            stages.postprocess,
            lambda: runner.gpu_ms,
            batch,
            args.warmup,
            args.runs,
            args.seconds,
        )
    power = tegrastats.power_summary(recorder.window(*window), len(samples["end_to_end"]) * batch, measure_s)
    engine_bytes = trt_compat.engine_device_memory(runner.engine)
    memory = {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "engine_device_mb": engine_bytes / 2**20,
        "cuda_used_by_runner_mb": runner.memory_mb,
    }
    return stats.make_row(
        samples,
        batch=batch,
        warmup_runs=warmup_runs,
        warmup_s=warmup_s,
        measure_s=measure_s,
        gflops_per_image=gflops,
        memory=memory,
        power=power,
        power_note=recorder.reason,
        peak_tflops=hardware.peak_tflops(device_label, setting["precision"]),
        **setting,
    )


def bench(args: argparse.Namespace) -> dict:
    """Benchmark a plan (sidecar checked first) per batch; write benchmark.{json,csv,md}."""
    plan_path = Path(args.plan)
    _header, plan = plans.split_engine(plan_path.read_bytes())
    sidecar = plans.read_sidecar(plans.sidecar_path(plan_path))
    plans.check_device(sidecar, device(), plan, name=plan_path.name)
    imgsz = tuple(sidecar.get("imgsz") or sidecar["inputs"][0]["shape"][2:])
    frames, frames_source = load_frames(args.images, plan_path, imgsz)
    report_env = environment()
    export_report = read_json(plan_path.with_name(f"{plan_path.stem}.export.json"))
    gflops = args.gflops or (
        export_report.get("source", {}).get("gflops")
        if list(export_report.get("source", {}).get("imgsz", [])) == list(imgsz)
        else None
    )
    rows = []
    for batch in [int(b) for b in str(args.batch).split(",")]:
        setting = {
            "model": str(plan_path),
            "format": "plan",
            "runtime": "tensorrt",
            "provider": report_env["device"],
            "precision": sidecar["precision"],
            "imgsz": list(imgsz),
            "frames": frames_source,
        }
        fixed = sidecar["inputs"][0]["shape"][0]
        if not sidecar.get("dynamic") and fixed != batch:
            rows.append(
                stats.skipped_row(
                    f"plan has a fixed batch of {fixed}; rebuild with --batch {batch}", batch=batch, **setting
                )
            )
            continue
        rows.append(bench_batch(plan, batch, frames, args, setting, report_env["device_label"], gflops))
    report = stats.make_report(rows, report_env, tool="deploy/jetson/run.py")
    paths = stats.write_report(report, args.out)
    print(paths["md"].read_text())
    print(f"report: {paths['json']}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="ONNX -> TensorRT plan + sidecar, built on this device")
    build_parser.add_argument("onnx")
    build_parser.add_argument("--precision", choices=("fp32", "fp16", "int8"))
    build_parser.add_argument("--calib", help="<stem>.calib.npy: uint8 (N, 3, h, w) images for INT8 calibration")
    build_parser.add_argument("--batch", type=int)
    build_parser.add_argument("--imgsz", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"))
    build_parser.add_argument("--workspace", type=float, help="builder workspace, GiB")
    build_parser.add_argument("--timing-cache", help="default: timing.cache next to the plan")
    build_parser.add_argument("--out", help="plan path (default <stem>.plan)")
    bench_parser = commands.add_parser("bench", help="benchmark a plan with the yolokd benchmark schema")
    bench_parser.add_argument("plan")
    bench_parser.add_argument("--images", help="folder of real images (recommended)")
    bench_parser.add_argument("--batch", default="1", help="batch size or comma list (dynamic plans)")
    bench_parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds")
    bench_parser.add_argument("--runs", type=int, default=200)
    bench_parser.add_argument("--seconds", type=float, default=15.0)
    bench_parser.add_argument("--conf", type=float, default=0.25)
    bench_parser.add_argument("--iou", type=float, default=0.7)
    bench_parser.add_argument("--gflops", type=float, help="model GFLOPs per image (default: from <stem>.export.json)")
    bench_parser.add_argument("--tegrastats-interval", type=int, default=100, help="ms")
    bench_parser.add_argument("--out", default="runs/jetson")
    commands.add_parser("info", help="print the environment this runner would report")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args)
        elif args.command == "bench":
            bench(args)
        else:
            print(json.dumps(environment(), indent=1))
    except (ValueError, FileNotFoundError) as error:  # refusals that name the fix (TensorRTFeatureError, mismatch...)
        print(f"run.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
