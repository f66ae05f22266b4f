"""Export options and target profiles, their mapping onto Ultralytics' exporter, and the CLI's export/benchmark."""

from __future__ import annotations

import importlib.util

import pytest

from yolokd.cli import main
from yolokd.export import profiles
from yolokd.export.exporter import export_model, plain_export_args, ultralytics_args

SHIPPED = ("onnx-portable", "jetson-orin-nano-fp16", "jetson-orin-nano-int8")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_resolve(name):
    """Every shipped profile loads, has a description, and resolves (INT8 once data is given)."""
    options = profiles.resolve_options(name, data="data.yaml")
    assert options.description
    assert profiles.find_profile(name) == profiles.PROFILE_DIR / f"{name}.yaml"


def test_overrides_win_over_the_profile():
    """key=value beats the profile: imgsz and batch replaced, the rest kept."""
    options = profiles.resolve_options("jetson-orin-nano-fp16", imgsz=320, batch=4)
    assert (options.imgsz, options.batch, options.half, options.workspace, options.format) == (
        320,
        4,
        True,
        2,
        "engine",
    )


def test_unknown_option_suggests():
    """A misspelt option names itself, suggests the right one and lists the valid ones."""
    with pytest.raises(ValueError, match=r"imgsize: unknown export option.*did you mean 'imgsz'"):
        profiles.resolve_options(None, imgsize=320)


def test_unknown_profile_suggests():
    """A profile that does not exist suggests the nearest shipped one."""
    with pytest.raises(FileNotFoundError, match="did you mean 'jetson-orin-nano-fp16'"):
        profiles.find_profile("jetson-orin-nano-f16")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"half": True, "int8": True}, "choose one precision"),
        ({"format": "tflite"}, "format: expected one of"),
        ({"format": "engine", "target": "onnxruntime"}, "target must be tensorrt"),
        ({"batch": 0}, "batch: expected a positive integer"),
    ],
)
def test_invalid_combinations(options, message):
    """Contradictory or incomplete options fail when built, with the reason."""
    with pytest.raises(ValueError, match=message):
        profiles.ExportOptions(**options)


def test_precision_maps_to_ultralytics_quantize_and_train_split():
    """int8 -> quantize=8 + data + fraction + split=train; half -> 16; engine -> device 0 + workspace."""
    int8 = ultralytics_args(profiles.ExportOptions(int8=True, data="d.yaml", fraction=0.5))
    assert (int8["quantize"], int8["data"], int8["fraction"], int8["split"]) == (8, "d.yaml", 0.5, "train")
    assert ultralytics_args(profiles.ExportOptions(half=True))["quantize"] == 16
    engine = ultralytics_args(profiles.ExportOptions(format="engine", workspace=2))
    assert (engine["device"], engine["workspace"], engine["format"]) == ("0", 2, "engine")
    assert "data" not in ultralytics_args(profiles.ExportOptions(data="d.yaml"))  # data only calibrates INT8


def test_onnx_for_a_device_build_stays_fp32():
    """format=onnx with an engine profile: the ONNX is FP32 (the device build picks the precision)."""
    options = profiles.resolve_options("jetson-orin-nano-int8", format="onnx", data="d.yaml")
    assert options.device_build and options.precision == "int8"
    assert "quantize" not in ultralytics_args(options)


@pytest.mark.parametrize(
    "options",
    [
        {"format": "engine", "half": True},
        {"format": "engine", "int8": True, "data": "d.yaml"},
        {"format": "engine", "half": True, "device": "1", "workspace": 4},
        {"profile": "jetson-orin-nano-fp16", "format": "onnx"},
    ],
)
def test_plain_export_of_an_engine_is_an_fp32_onnx_on_the_cpu(options):
    """Engines (any precision) and device-build ONNX hold an FP32 ONNX: the plain export has no quantize (16 with
    format=onnx on a CPU would add Ultralytics' Cast nodes), no device, no workspace, no calibration data."""
    profile = options.pop("profile", None)
    args = plain_export_args(profiles.resolve_options(profile, **options))
    assert args["format"] == "onnx"
    assert not {"quantize", "device", "workspace", "data", "fraction", "split"} & set(args)


def test_plain_export_of_an_fp16_onnx_repeats_its_conversion():
    """An FP16 ONNX is compared with a plain model converted the same way: quantize=16 on the same device."""
    args = plain_export_args(profiles.ExportOptions(half=True, device="cpu", imgsz=320))
    assert (args["format"], args["quantize"], args["device"], args["imgsz"]) == ("onnx", 16, "cpu", 320)


def test_plain_export_of_an_int8_onnx_is_skipped():
    """An INT8 (Q/DQ) ONNX has no plain counterpart without its own calibration: no comparison."""
    assert plain_export_args(profiles.ExportOptions(int8=True, data="d.yaml")) is None


def test_none_strings_from_the_command_line():
    """nms=None typed on a command line is None, not the string 'None'."""
    assert profiles.ExportOptions(nms="None", workspace="null").nms is None


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_engine_without_tensorrt_is_a_clean_cli_error(tmp_path, capsys):
    """`yolokd export --format engine` without TensorRT exits 2 with the reason, before loading anything."""
    model = tmp_path / "best.pt"
    model.write_bytes(b"not loaded")
    assert main(["export", f"model={model}", "--format", "engine"]) == 2
    assert "tensorrt is not installed" in capsys.readouterr().err
    with pytest.raises(Exception, match="tensorrt"):
        export_model(model, format="engine")


def test_cli_usage_errors(capsys):
    """Missing model, unknown benchmark argument (with a suggestion) and help text."""
    assert main(["export"]) == 2 and "needs model=" in capsys.readouterr().err
    assert main(["benchmark", "model=a.pt", "batches=1,8"]) == 2
    assert "did you mean 'batch'" in capsys.readouterr().err
    assert main(["benchmark", "--help"]) == 0 and "p50" in capsys.readouterr().out
    assert main(["export", "-h"]) == 0 and "profile=" in capsys.readouterr().out
