"""TensorRT engine files: Ultralytics' metadata header, the raw plan, and the device sidecar.

An Ultralytics ``.engine`` is ``int32 little-endian length | JSON metadata | serialized engine`` (written by
``ultralytics.utils.export.engine.onnx2engine``, read back by ``BaseBackend.engine_header``). trtexec, DeepStream
and the C++ runtime read only the serialized engine: ``write_plan`` strips the header into ``<stem>.plan``.

An engine runs only where it was built (same TensorRT version, same GPU). The sidecar ``<stem>.trt.json`` records
where that was, the plan's SHA-256 and its inputs/outputs; ``check_device`` refuses a plan whose sidecar does not
match the current device, with the fix in the message. Standard library only; tensorrt is imported lazily
(``deploy/jetson/run.py`` loads this file by path).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SIDECAR_KEYS = (
    "tensorrt_version",
    "gpu_name",
    "compute_capability",
    "precision",
    "inputs",
    "outputs",
    "plan_sha256",
    "source",
    "created",
)
DEVICE_KEYS = ("tensorrt_version", "gpu_name", "compute_capability")


class EngineMismatchError(ValueError):
    """A plan built for another TensorRT version or GPU than this machine's."""


class TensorRTUnavailableError(RuntimeError):
    """tensorrt (or a CUDA GPU) is not available here; the message says which."""


def split_engine(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Split an Ultralytics engine file's bytes into (metadata, serialized plan); (``{}``, data) without a header."""
    if len(data) >= 4:
        length = int.from_bytes(data[:4], byteorder="little", signed=True)
        if 0 < length <= len(data) - 4:
            with contextlib.suppress(ValueError):  # plan bytes are not JSON: only a real header parses
                metadata = json.loads(data[4 : 4 + length])
                if isinstance(metadata, dict):
                    return metadata, data[4 + length :]
    return {}, data


def write_plan(engine_path: str | Path, plan_path: str | Path | None = None) -> Path:
    """Write the engine's serialized plan without Ultralytics' header (default ``<stem>.plan``); returns its path."""
    engine_path = Path(engine_path)
    plan_path = Path(plan_path) if plan_path else engine_path.with_suffix(".plan")
    _metadata, plan = split_engine(engine_path.read_bytes())
    plan_path.write_bytes(plan)
    return plan_path


def sidecar_path(engine_or_plan: str | Path) -> Path:
    """``best.engine`` / ``best.plan`` -> ``best.trt.json`` (one sidecar for both: they hold the same plan)."""
    path = Path(engine_or_plan)
    return path.with_name(f"{path.stem}.trt.json")


def plan_sha256(plan: bytes) -> str:
    """SHA-256 of the serialized plan (the header excluded), hex."""
    return hashlib.sha256(plan).hexdigest()


def make_sidecar(plan: bytes, device: dict[str, str], precision: str, io: dict[str, list], source: str) -> dict:
    """The sidecar of a plan built on ``device`` (``DEVICE_KEYS``) at ``precision`` with ``io`` = inputs/outputs."""
    missing = [key for key in DEVICE_KEYS if key not in device]
    if missing:
        raise ValueError(f"device is missing {missing}; expected {DEVICE_KEYS}")
    return {
        **{key: str(device[key]) for key in DEVICE_KEYS},
        "precision": precision,
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "plan_sha256": plan_sha256(plan),
        "source": source,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_sidecar(path: str | Path, sidecar: dict) -> Path:
    """Write a sidecar JSON (checked for ``SIDECAR_KEYS``)."""
    missing = [key for key in SIDECAR_KEYS if key not in sidecar]
    if missing:
        raise ValueError(f"sidecar is missing {missing}")
    path = Path(path)
    path.write_text(json.dumps(sidecar, indent=1) + "\n")
    return path


def read_sidecar(path: str | Path) -> dict:
    """Read a sidecar; a missing file or field is an error that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no sidecar for this engine; it records the TensorRT version and GPU the engine was built for. "
            f"Rebuild with `yolokd export format=engine` or `deploy/jetson/run.py build`"
        )
    sidecar = json.loads(path.read_text())
    missing = [key for key in SIDECAR_KEYS if key not in sidecar]
    if missing:
        raise ValueError(f"{path}: sidecar is missing {missing}")
    return sidecar


def device_mismatches(sidecar: dict, device: dict) -> list[str]:
    """``key: built X, here Y`` for every device field that differs (TensorRT version, GPU name, compute capability)."""
    return [
        f"{key}: built {sidecar.get(key)!r}, here {device.get(key)!r}"
        for key in DEVICE_KEYS
        if str(sidecar.get(key)) != str(device.get(key))
    ]


def check_device(sidecar: dict, device: dict, plan: bytes | None = None, name: str = "engine") -> None:
    """Raise EngineMismatchError when a plan cannot be trusted here: other TensorRT/GPU, or another plan's sidecar."""
    problems = device_mismatches(sidecar, device)
    if plan is not None and plan_sha256(plan) != sidecar["plan_sha256"]:
        problems.append("plan_sha256: the sidecar belongs to another build of this file")
    if problems:
        raise EngineMismatchError(
            f"{name} was built for another device or TensorRT version ({'; '.join(problems)}). TensorRT engines run "
            f"only where they were built: rebuild it on this machine from the ONNX (`yolokd export model=... "
            f"format=engine` or `python3 deploy/jetson/run.py build model.onnx`)"
        )


def import_tensorrt():
    """Import tensorrt, or raise TensorRTUnavailableError saying why (e.g. for a pytest skip reason)."""
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailableError(
            f"tensorrt is not installed ({error}); TensorRT engines need an NVIDIA GPU with TensorRT "
            f"(pip install 'yolokd[trt]', or JetPack on a Jetson)"
        ) from error
    return tensorrt


def current_device(gpu: dict[str, str] | None) -> dict[str, str]:
    """``DEVICE_KEYS`` of this machine from tensorrt's version and ``gpu`` = {gpu_name, compute_capability}.

    ``gpu`` comes from the caller (torch.cuda on a host, ``hardware.cuda_device_ctypes`` on a Jetson); None means
    no GPU was found and raises TensorRTUnavailableError.
    """
    trt = import_tensorrt()
    if gpu is None:
        raise TensorRTUnavailableError("no CUDA GPU found: TensorRT engines need one")
    return {"tensorrt_version": trt.__version__, **gpu}


def engine_io(engine: Any) -> dict[str, list]:
    """Inputs and outputs of a deserialized ``tensorrt.ICudaEngine``: ``{inputs: [{name, shape, dtype}], outputs}``."""
    trt = import_tensorrt()
    io: dict[str, list] = {"inputs": [], "outputs": []}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        dtype = str(engine.get_tensor_dtype(name)).rsplit(".", 1)[-1].lower()  # DataType.HALF -> half
        entry = {"name": name, "shape": list(engine.get_tensor_shape(name)), "dtype": dtype}
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        io["inputs" if is_input else "outputs"].append(entry)
    return io
