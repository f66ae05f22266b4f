"""Export options and target profiles: ``yolokd export model=best.pt profile=export/jetson-orin-nano-fp16.yaml``.

A profile is a flat YAML of ``ExportOptions`` fields describing one deployment target; key=value overrides win.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).resolve().parents[2] / "export"
"""The repository's ``export/`` folder (profiles are also found there by bare name: ``profile=onnx-portable``)."""
FORMATS = ("onnx", "engine")
TARGETS = ("onnxruntime", "tensorrt")


@dataclass
class ExportOptions:
    """Everything ``yolokd export`` takes besides ``model`` and ``profile``.

    Attributes:
        format (str): onnx or engine (a TensorRT engine built here, for this GPU and TensorRT version).
        target (str | None): runtime the file is for: onnxruntime or tensorrt; None = onnxruntime for onnx, tensorrt
            for engine. format=onnx with target=tensorrt writes an FP32 ONNX for an engine built on the device:
            half/int8 then choose the device build's precision (a build recipe and INT8 calibration images are
            written next to the ONNX), they do not change the ONNX.
        description (str): what the profile is for (profiles only; copied into the report).
        imgsz (int | list[int]): input side, or [height, width], pixels.
        batch (int): batch size of the input (the maximum with dynamic).
        dynamic (bool): dynamic batch and image size.
        half (bool): FP16.
        int8 (bool): INT8 with calibration on ``data``'s ``calib_split`` split (``data`` is required, checked by
            ``export_model``, except for a quantization-aware trained checkpoint, which is always INT8). With
            format=onnx: a Q/DQ ONNX by NVIDIA ModelOpt (``yolokd.quant``).
        nms (bool | None): None = raw outputs, NMS outside the model; True = NMS inside the graph; False = the
            NMS-free one-to-one branch of YOLOv10/YOLO26 heads.
        workspace (float | None): TensorRT builder workspace, GiB (None = TensorRT decides).
        simplify (bool): simplify the ONNX graph with onnxslim.
        opset (int | None): ONNX opset (None = Ultralytics' choice).
        data (str | None): data YAML: INT8 calibration images (``calib_split``), and with checks the parity images
            and the mAP comparison (val split).
        fraction (float): fraction of the calibration split used for INT8 calibration.
        calib_split (str): split that INT8 calibration reads (train, so validation images stay unseen).
        calib_images (int): INT8 calibration images: PTQ of a Q/DQ ONNX, or ``<stem>.calib.npy`` for an INT8
            engine built on the device.
        device (str | None): export device (engine: a CUDA GPU, default 0).
        checks (bool): run the export checks (graph, parity, mAP with data, no KD residue).
        parity_images (int): real images for the numerical parity check.
        compare_plain (bool): check that the graph equals a plain export of the student's architecture.
    """

    format: str = "onnx"
    target: str | None = None
    description: str = ""
    imgsz: int | list[int] = 640
    batch: int = 1
    dynamic: bool = False
    half: bool = False
    int8: bool = False
    nms: bool | None = None
    workspace: float | None = None
    simplify: bool = True
    opset: int | None = None
    data: str | None = None
    fraction: float = 1.0
    calib_split: str = "train"
    calib_images: int = 128
    device: str | None = None
    checks: bool = True
    parity_images: int = 8
    compare_plain: bool = True

    def __post_init__(self) -> None:
        for option in fields(self):  # "None" / "null" typed on a command line mean None
            value = getattr(self, option.name)
            if isinstance(value, str) and value.lower() in {"none", "null"}:
                setattr(self, option.name, None)
        self.format = {"tensorrt": "engine", "trt": "engine"}.get(str(self.format).lower(), str(self.format).lower())
        if self.format not in FORMATS:
            raise ValueError(f"format: expected one of {FORMATS}, got {self.format!r}")
        if self.target is None:
            self.target = "tensorrt" if self.format == "engine" else "onnxruntime"
        if self.target not in TARGETS:
            raise ValueError(f"target: expected one of {TARGETS}, got {self.target!r}")
        if self.format == "engine" and self.target != "tensorrt":
            raise ValueError("target: format=engine is a TensorRT engine; target must be tensorrt")
        if self.half and self.int8:
            raise ValueError("half and int8: choose one precision (int8 engines keep FP16 layers where faster)")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch: expected a positive integer, got {self.batch!r}")
        if not 0 < float(self.fraction) <= 1:
            raise ValueError(f"fraction: expected 0 < fraction <= 1, got {self.fraction}")

    @property
    def precision(self) -> str:
        """fp32, fp16 or int8."""
        return "int8" if self.int8 else "fp16" if self.half else "fp32"

    @property
    def device_build(self) -> bool:
        """An ONNX for an engine built on the target device (format=onnx, target=tensorrt)."""
        return self.format == "onnx" and self.target == "tensorrt"


OPTION_NAMES = tuple(option.name for option in fields(ExportOptions))


def check_keys(options: dict[str, Any], where: str) -> None:
    """Raise a ValueError naming an unknown key, with a "did you mean" and the valid keys."""
    for key in options:
        if key not in OPTION_NAMES:
            matches = difflib.get_close_matches(key, OPTION_NAMES, n=1)
            suggestion = f" (did you mean '{matches[0]}'?)" if matches else ""
            raise ValueError(f"{key}: unknown export option in {where}{suggestion}. Valid: {', '.join(OPTION_NAMES)}")


def find_profile(profile: str | Path) -> Path:
    """A profile path as given, or ``export/<name>.yaml`` of this repository for a bare name."""
    path = Path(profile)
    candidates = [path, PROFILE_DIR / path.name, PROFILE_DIR / f"{path.name}.yaml"]
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    if found is None:
        available = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")) if PROFILE_DIR.is_dir() else []
        matches = difflib.get_close_matches(path.stem, available, n=1)
        suggestion = f"; did you mean '{matches[0]}'?" if matches else ""
        raise FileNotFoundError(f"profile: {profile} not found{suggestion} Profiles in {PROFILE_DIR}: {available}")
    return found


def load_profile(profile: str | Path) -> dict[str, Any]:
    """The options of a profile YAML (checked against ``ExportOptions``)."""
    path = find_profile(profile)
    options = yaml.safe_load(path.read_text()) or {}
    if not isinstance(options, dict):
        raise ValueError(f"profile: {path} must be a mapping of export options, got {type(options).__name__}")
    check_keys(options, str(path))
    return options


def resolve_options(profile: str | Path | None = None, **overrides: Any) -> ExportOptions:
    """Profile options, then key=value overrides (which win), as ``ExportOptions``."""
    check_keys(overrides, "the command line")
    options = load_profile(profile) if profile else {}
    return ExportOptions(**{**options, **overrides})
