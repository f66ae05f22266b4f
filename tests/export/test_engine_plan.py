"""TensorRT engine files without TensorRT: Ultralytics' header, the raw plan, the sidecar and its device check."""

from __future__ import annotations

import json

import pytest
import torch

from yolokd.export import plan

HERE = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}
IO = {
    "inputs": [{"name": "images", "shape": [1, 3, 640, 640], "dtype": "float"}],
    "outputs": [{"name": "output0", "shape": [1, 84, 8400], "dtype": "float"}],
}
PLAN = b"ftrt\x00\x01" + bytes(range(256)) * 4  # stands in for a serialized engine (binary, not JSON)


def ultralytics_engine(metadata: dict, plan_bytes: bytes) -> bytes:
    """An engine file as ultralytics.utils.export.engine.onnx2engine writes it: int32 LE length, JSON, plan."""
    meta = json.dumps(metadata)
    return len(meta).to_bytes(4, byteorder="little", signed=True) + meta.encode() + plan_bytes


def test_split_strips_the_ultralytics_header(tmp_path):
    """The header is parsed and removed; what is left is the plan, byte for byte; Ultralytics agrees on the offset."""
    from ultralytics.nn.backends.base import BaseBackend

    metadata = {"names": {"0": "a"}, "imgsz": [640, 640], "args": {"quantize": 16}}
    engine = tmp_path / "best.engine"
    engine.write_bytes(ultralytics_engine(metadata, PLAN))
    found, plan_bytes = plan.split_engine(engine.read_bytes())
    assert (found, plan_bytes) == (metadata, PLAN)
    offset, their_metadata = BaseBackend.engine_header(engine)
    assert engine.read_bytes()[offset:] == PLAN and their_metadata == metadata
    assert plan.write_plan(engine).read_bytes() == PLAN


def test_plan_without_header_is_left_alone():
    """A raw plan (or a header length that overruns the file) is returned whole."""
    assert plan.split_engine(PLAN) == ({}, PLAN)
    overrun = (10**6).to_bytes(4, "little") + b"{}"
    assert plan.split_engine(overrun) == ({}, overrun)


def test_sidecar_round_trip(tmp_path):
    """make_sidecar -> write -> read gives the device, precision, I/O and the plan's SHA-256 back."""
    sidecar = plan.make_sidecar(PLAN, HERE, "fp16", IO, "best.onnx")
    path = plan.write_sidecar(plan.sidecar_path(tmp_path / "best.plan"), sidecar)
    assert path.name == "best.trt.json" and plan.sidecar_path(tmp_path / "best.engine") == path
    read = plan.read_sidecar(path)
    assert read == sidecar and read["plan_sha256"] == plan.plan_sha256(PLAN) and read["inputs"] == IO["inputs"]
    plan.check_device(read, HERE, PLAN)  # same device, same plan: no error


def test_mismatched_device_is_a_clear_error():
    """Another TensorRT version and GPU: the error names both values of each and says to rebuild."""
    sidecar = plan.make_sidecar(PLAN, HERE, "int8", IO, "best.onnx")
    other = {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"}
    with pytest.raises(plan.EngineMismatchError) as error:
        plan.check_device(sidecar, other, PLAN, name="best.plan")
    message = str(error.value)
    for expected in ("best.plan", "'10.3.0'", "'10.7.0'", "'Orin'", "'NVIDIA H200'", "'8.7'", "'9.0'", "rebuild"):
        assert expected in message


def test_sidecar_of_another_plan_is_refused():
    """Same device, but the plan's bytes are not the ones the sidecar describes."""
    sidecar = plan.make_sidecar(PLAN, HERE, "fp16", IO, "best.onnx")
    with pytest.raises(plan.EngineMismatchError, match="plan_sha256"):
        plan.check_device(sidecar, HERE, PLAN + b"x")


def test_missing_or_incomplete_sidecar(tmp_path):
    """No sidecar: FileNotFoundError explaining what it is for; a missing field is named."""
    with pytest.raises(FileNotFoundError, match="TensorRT version and GPU"):
        plan.read_sidecar(tmp_path / "none.trt.json")
    broken = tmp_path / "broken.trt.json"
    broken.write_text(json.dumps({"tensorrt_version": "10.3.0"}))
    with pytest.raises(ValueError, match="gpu_name"):
        plan.read_sidecar(broken)


def test_tensorrt_absent_is_a_clear_reason(monkeypatch):
    """Without tensorrt, import_tensorrt raises TensorRTUnavailableError with the install hint."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(plan.TensorRTUnavailableError, match="tensorrt is not installed"):
        plan.import_tensorrt()


@pytest.mark.parametrize(
    ("given", "expected"), [(None, "cuda:0"), ("", "cuda:0"), (0, "cuda:0"), ("1", "cuda:1"), ("cuda:1", "cuda:1")]
)
def test_engine_device_resolution_without_device(given, expected):
    """export format=engine without device= builds on cuda:0 (it used to become 'cuda:None' and crash)."""
    from yolokd.export.exporter import cuda_device

    assert cuda_device(given) == torch.device(expected)
