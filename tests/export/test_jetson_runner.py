"""deploy/jetson/run.py without a Jetson: no torch needed, the same statistics and schema as `yolokd benchmark`,
and its NumPy pre/postprocessing equal to Ultralytics'."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yolokd.export import stats

RUNNER = Path(__file__).parents[2] / "deploy" / "jetson" / "run.py"


@pytest.fixture(scope="module")
def run():
    """deploy/jetson/run.py imported as a module."""
    spec = importlib.util.spec_from_file_location("jetson_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runner_imports_without_torch_or_ultralytics():
    """The runner and its shared modules load in a Python where torch, ultralytics and yolokd cannot be imported."""
    code = (
        "import sys\n"
        "for name in ('torch', 'ultralytics', 'yolokd', 'onnx', 'onnxruntime'):\n"
        "    sys.modules[name] = None\n"
        f"sys.argv = ['run.py', '--help']\n"
        "import runpy\n"
        f"try:\n    runpy.run_path({str(RUNNER)!r}, run_name='__main__')\nexcept SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "build" in result.stdout and "bench" in result.stdout


def test_shared_schema_is_the_same_file(run):
    """The runner's stats module is yolokd/export/stats.py itself (loaded by path), so the schemas cannot drift."""
    assert Path(run.stats.__file__).resolve() == Path(stats.__file__).resolve()
    assert run.stats.ROW_KEYS == stats.ROW_KEYS and run.stats.STAT_KEYS == stats.STAT_KEYS


def test_measure_gives_a_schema_valid_row(run):
    """The runner's timing loop with stand-in stages: every stage recorded per run, the row follows the schema."""
    gpu = iter(float(x) for x in range(1000))
    samples, warmup_runs, _, measure_s, window = run.measure(
        run=lambda: np.zeros((1, 12, 84), np.float32),
        preprocess=lambda i: i,
        postprocess=lambda out, i: out,
        gpu_ms=lambda: next(gpu),
        batch=1,
        warmup_s=0.0,
        min_runs=7,
        min_seconds=0.0,
    )
    assert warmup_runs == 1 and [len(samples[s]) for s in stats.STAGES] == [7] * 5 and window[1] >= window[0]
    power = run.tegrastats.power_summary(
        [run.tegrastats.parse_line("VDD_IN 5000mW/5000mW")], frames=7, seconds=measure_s
    )
    row = run.stats.make_row(
        samples,
        batch=1,
        warmup_runs=warmup_runs,
        warmup_s=0.0,
        measure_s=measure_s,
        power=power,
        model="m.plan",
        format="plan",
        runtime="tensorrt",
        provider="Orin",
        precision="fp16",
        imgsz=[64, 64],
    )
    report = run.stats.make_report([row], {"device": "NVIDIA Jetson Orin Nano"}, tool="deploy/jetson/run.py")
    assert stats.schema_errors(report) == []
    assert row["power"]["mj_per_frame"] == pytest.approx(5.0 * measure_s / 7 * 1000)


def test_letterbox_equals_ultralytics(run):
    """NumPy/OpenCV letterbox == Ultralytics' LetterBox on a real photo, square and rectangular inputs."""
    import cv2
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ASSETS

    image = cv2.imread(str(ASSETS / "bus.jpg"))
    for imgsz in ((640, 640), (384, 640), (64, 64)):
        expected = LetterBox(imgsz, auto=False)(image=image)
        np.testing.assert_array_equal(run.pipeline.letterbox(image, imgsz), expected)


def test_nms_equals_ultralytics(run):
    """NumPy NMS keeps the same boxes, scores and classes as ultralytics.utils.nms.non_max_suppression."""
    from ultralytics.utils.nms import non_max_suppression

    generator = torch.Generator().manual_seed(0)
    anchors, classes = 400, 5
    centres = torch.rand(2, 2, anchors, generator=generator) * 200
    sizes = torch.rand(2, 2, anchors, generator=generator) * 60 + 5
    scores = torch.rand(2, classes, anchors, generator=generator) ** 3
    predictions = torch.cat([centres, sizes, scores], 1)
    expected = non_max_suppression(predictions, 0.25, 0.45, max_det=300)
    got = run.pipeline.nms(predictions.numpy(), 0.25, 0.45, max_det=300)
    for mine, theirs in zip(got, expected, strict=True):
        assert len(mine) > 10
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-5, atol=1e-4)


def test_end_to_end_outputs_are_filtered_by_score(run):
    """(B, N, 6) detections: only the score threshold and max_det apply."""
    detections = np.array([[[0, 0, 1, 1, 0.9, 2], [0, 0, 1, 1, 0.1, 1], [0, 0, 2, 2, 0.5, 0]]], np.float32)
    (kept,) = run.pipeline.nms(detections, 0.25, 0.7, end2end=True)
    assert kept[:, 4].tolist() == pytest.approx([0.9, 0.5])


def test_scale_boxes_equals_ultralytics(run):
    """Boxes mapped back to the original image as ultralytics.utils.ops.scale_boxes does."""
    from ultralytics.utils.ops import scale_boxes

    boxes = np.array([[10.0, 100.0, 300.0, 500.0], [0.0, 0.0, 640.0, 640.0]], np.float32)
    expected = scale_boxes((640, 640), torch.from_numpy(boxes.copy()), (1080, 810)).numpy()
    np.testing.assert_allclose(run.pipeline.scale_boxes((640, 640), boxes, (1080, 810)), expected, atol=1e-3)
