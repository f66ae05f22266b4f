"""One inference call per runtime, one interface: ``.pt`` (torch), ``.onnx`` (onnxruntime), ``.engine``/``.plan``
(TensorRT): ``runner(images) -> predictions``.

``images`` is a float tensor (B, 3, h, w) in [0, 1] on ``runner.device``; predictions are (B, 4 + C, A) raw head
outputs (xywh pixels + class probabilities), or (B, N, 6) detections (xyxy, score, class) for NMS-free heads and
``nms=True`` exports (``runner.end2end``). Copies to and from the runtime are part of the call.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yolokd.export import plan as plans
from yolokd.export import trt_compat

ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_TRT_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64}


@dataclass
class Runner:
    """Common state of a loaded model.

    Attributes:
        path (Path): the model file.
        format (str): pt, onnx or engine.
        runtime (str): torch, onnxruntime or tensorrt.
        provider (str): where it runs: cpu / cuda:0 for torch, the execution provider for onnxruntime, the GPU name
            for TensorRT.
        precision (str): fp32, fp16 or int8 (of the weights and compute, as built or loaded).
        device (torch.device): where the input tensor must be.
        fixed_batch (int | None): the only batch size the model accepts, None when dynamic.
        imgsz (tuple[int, int] | None): the only input (height, width) it accepts, None when dynamic.
        nc (int): classes.
        end2end (bool): outputs are (B, N, 6) detections, not raw (B, 4 + C, A) predictions.
    """

    path: Path
    format: str
    runtime: str
    provider: str
    precision: str
    device: torch.device
    fixed_batch: int | None
    imgsz: tuple[int, int] | None
    nc: int
    end2end: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def all_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every output of one call, in the export's order: ``[predictions]``, or for segment models
        ``[predictions, prototypes (B, P, h, w)]``."""
        return [self(images)]

    def gpu_ms(self) -> float | None:
        """GPU time of the last call measured by the runtime itself (CUDA events on its stream), ms; None if it has
        none (then a benchmark times the call on the caller's stream)."""
        return None

    def why_not(self, batch: int, imgsz: tuple[int, int]) -> str | None:
        """Why this model cannot run a (batch, imgsz) input, or None when it can."""
        if self.fixed_batch is not None and batch != self.fixed_batch:
            fixed = self.fixed_batch
            return f"{self.path.name} has a fixed batch of {fixed}; export it with batch={batch} or dynamic=true"
        if self.imgsz is not None and tuple(imgsz) != tuple(self.imgsz):
            return f"{self.path.name} has a fixed input of {self.imgsz}; export it with imgsz={list(imgsz)}"
        return None


class TorchRunner(Runner):
    """A ``.pt`` checkpoint through Ultralytics' model, fused, in eval mode (``half`` on CUDA only)."""

    def __init__(self, path: Path, device: torch.device, precision: str = "fp32"):
        from ultralytics import YOLO

        if precision not in {"fp32", "fp16"}:
            raise ValueError(f"precision: PyTorch runs fp32 or fp16, got {precision!r} (INT8 needs an export)")
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision: fp16 PyTorch inference needs a CUDA device (device=0)")
        model = YOLO(str(path)).model.float().fuse(verbose=False).eval().to(device)
        self.model = model.half() if precision == "fp16" else model
        dtype = "cuda:" + str(device.index or 0) if device.type == "cuda" else "cpu"
        super().__init__(
            path,
            "pt",
            "torch",
            dtype,
            precision,
            device,
            None,
            None,
            len(model.names),
            bool(getattr(model, "end2end", False)),
        )

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.all_outputs(images)[0]

    @torch.inference_mode()
    def all_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The eval outputs as the export has them: (predictions, raw) -> [predictions]; a segment model's
        ((predictions, prototypes), raw) -> [predictions, prototypes]."""
        output = self.model(images.half() if self.precision == "fp16" else images)
        output = output[0] if isinstance(output, (list, tuple)) else output
        return list(output) if isinstance(output, (list, tuple)) else [output]


def onnx_metadata(session_or_path: Any) -> dict[str, Any]:
    """Ultralytics' metadata of an ONNX export (names, imgsz, batch, args, end2end...), parsed into Python values."""
    if isinstance(session_or_path, (str, Path)):
        import onnx

        raw = {
            prop.key: prop.value for prop in onnx.load(str(session_or_path), load_external_data=False).metadata_props
        }
    else:
        raw = session_or_path.get_modelmeta().custom_metadata_map
    parsed = {}
    for key, value in raw.items():
        try:
            parsed[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed[key] = value
    return parsed


def precision_of(metadata: dict[str, Any]) -> str:
    """fp32 / fp16 / int8 from an Ultralytics export's ``args.quantize`` (older exports: ``args.half`` / ``int8``)."""
    args = metadata.get("args") or {}
    quantize = args.get("quantize")
    if quantize in {8, "int8"} or args.get("int8"):
        return "int8"
    if quantize in {16, "fp16"} or args.get("half"):
        return "fp16"
    return "fp32"


class OrtRunner(Runner):
    """An ``.onnx`` file through onnxruntime; provider auto = CUDA when present (device=0), else CPU."""

    def __init__(self, path: Path, device: torch.device, provider: str = "auto", threads: int | None = None):
        import onnxruntime as ort

        available = ort.get_available_providers()
        if provider == "auto":
            provider = "cuda" if device.type == "cuda" and ORT_PROVIDERS["cuda"] in available else "cpu"
        if provider not in ORT_PROVIDERS:
            raise ValueError(f"provider: expected auto, {', '.join(ORT_PROVIDERS)}; got {provider!r}")
        if ORT_PROVIDERS[provider] not in available:
            raise ValueError(f"provider: {ORT_PROVIDERS[provider]} is not in this onnxruntime build ({available})")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = [ORT_PROVIDERS[provider]] + (["CPUExecutionProvider"] if provider != "cpu" else [])
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        node = self.session.get_inputs()[0]
        self.input_name = node.name
        self.input_dtype = "float16" if "float16" in node.type else "float32"
        batch, _channels, height, width = node.shape
        metadata = onnx_metadata(self.session)
        fixed = isinstance(height, int) and isinstance(width, int)
        super().__init__(
            path,
            "onnx",
            "onnxruntime",
            ORT_PROVIDERS[provider],
            precision_of(metadata),
            torch.device("cpu"),
            batch if isinstance(batch, int) else None,
            (height, width) if fixed else None,
            len(metadata.get("names") or {}) or int(self.session.get_outputs()[0].shape[1]) - 4,
            bool(metadata.get("end2end")) or bool((metadata.get("args") or {}).get("nms")),
            {"threads": threads, "metadata": metadata},
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.all_outputs(images)[0]  # every output is computed (a benchmark times the whole graph)

    def all_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every output of the graph (``output0``, and ``output1`` for segment models)."""
        array = images.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        return [torch.from_numpy(out) for out in self.session.run(None, {self.input_name: array})]


class TrtRunner(Runner):
    """A TensorRT ``.engine`` (Ultralytics header or not) or ``.plan`` on a CUDA GPU; the sidecar is checked first."""

    def __init__(self, path: Path, device: torch.device):
        trt = plans.import_tensorrt()
        if not torch.cuda.is_available():
            raise plans.TensorRTUnavailableError("TensorRT engines need a CUDA GPU; torch sees none")
        device = device if device.type == "cuda" else torch.device("cuda:0")
        metadata, plan = plans.split_engine(path.read_bytes())
        sidecar = plans.read_sidecar(plans.sidecar_path(path))
        major, minor = torch.cuda.get_device_capability(device)
        gpu = {"gpu_name": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}
        plans.check_device(sidecar, plans.current_device(gpu), plan, name=path.name)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise plans.EngineMismatchError(f"{path.name}: TensorRT could not deserialize the plan; rebuild it here")
        self.context = self.engine.create_execution_context()
        with torch.cuda.device(device):  # created once: TensorRT on the legacy default stream adds synchronisations
            self.stream = torch.cuda.Stream(device)
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        io = plans.engine_io(self.engine)
        self.input_name, self.output_names = io["inputs"][0]["name"], [out["name"] for out in io["outputs"]]
        shape = io["inputs"][0]["shape"]
        output_shape = io["outputs"][0]["shape"]
        super().__init__(
            path,
            "engine",
            "tensorrt",
            gpu["gpu_name"],
            sidecar["precision"],
            device,
            shape[0] if shape[0] > 0 else None,
            (shape[2], shape[3]) if min(shape[2:]) > 0 else None,
            len(metadata.get("names") or {}) or max(output_shape[1] - 4, 0),
            bool(metadata.get("end2end")) or bool((metadata.get("args") or {}).get("nms")),
            {"sidecar": sidecar, "device_memory_bytes": trt_compat.engine_device_memory(self.engine)},
        )

    def _dtype(self, name: str) -> torch.dtype:
        return _TRT_TORCH_DTYPES[str(self.engine.get_tensor_dtype(name)).rsplit(".", 1)[-1]]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.all_outputs(images)[0]

    def all_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every output binding of the engine, in its order, as float tensors on the GPU."""
        with torch.cuda.device(self.device):
            images = images.to(self.device, self._dtype(self.input_name)).contiguous()
            self.context.set_input_shape(self.input_name, tuple(images.shape))
            self.context.set_tensor_address(self.input_name, images.data_ptr())
            outputs = []
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                out = torch.empty(shape, dtype=self._dtype(name), device=self.device)
                self.context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            caller = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(caller)  # the input and output buffers were made on the caller's stream
            enqueue_timed(self.context, self.stream, self.start, self.end, self.path.name)
            caller.wait_stream(self.stream)  # the caller reads the outputs after TensorRT wrote them
        return [out.float() for out in outputs]

    def gpu_ms(self) -> float:
        """CUDA-event time of the last enqueue on this runner's stream, ms (waits for it to finish)."""
        self.end.synchronize()
        return self.start.elapsed_time(self.end)


def enqueue_timed(context: Any, stream: Any, start: Any, end: Any, name: str) -> None:
    """``context.execute_async_v3`` on ``stream`` between two recorded CUDA events; raise when TensorRT refuses.

    Args:
        context: a ``tensorrt.IExecutionContext`` with its tensor addresses set.
        stream: a ``torch.cuda.Stream`` (``cuda_stream`` is its handle) that is not the legacy default stream.
        start, end: ``torch.cuda.Event(enable_timing=True)``, recorded on ``stream`` around the enqueue.
        name: the model file, for the error message.
    """
    start.record(stream)
    launched = context.execute_async_v3(stream.cuda_stream)
    end.record(stream)
    if not launched:
        raise RuntimeError(
            f"{name}: TensorRT execute_async_v3 returned False (the enqueue failed, see TensorRT's error above); "
            f"its outputs would be garbage"
        )


def open_runner(
    path: str | Path, device: str = "cpu", precision: str = "fp32", provider: str = "auto", threads: int | None = None
) -> Runner:
    """Load ``path`` with the runtime of its suffix (.pt torch, .onnx onnxruntime, .engine/.plan TensorRT)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model: {path} not found")
    torch_device = torch.device(f"cuda:{device}" if str(device).isdigit() else str(device))
    if path.suffix == ".pt":
        if threads:
            torch.set_num_threads(int(threads))
        return TorchRunner(path, torch_device, precision)
    if path.suffix == ".onnx":
        return OrtRunner(path, torch_device, provider, threads)
    if path.suffix in {".engine", ".plan"}:
        return TrtRunner(path, torch_device)
    raise ValueError(f"model: {path.name} is not a .pt, .onnx, .engine or .plan file")


def export_report_of(path: str | Path) -> dict[str, Any] | None:
    """The export report written next to an exported model (``<stem>.export.json``), if there is one."""
    report = Path(path).with_name(f"{Path(path).stem}.export.json")
    return json.loads(report.read_text()) if report.is_file() else None
