"""NVIDIA ModelOpt, the INT8 quantizer behind ``yolokd qat`` and INT8 ONNX exports: is it installed, and is a
checkpoint quantization-aware trained (QAT).

yolokd reaches ModelOpt only through Ultralytics' own QAT helpers (``prepare_qat``, ``qat_state``, ``restore_qat``
in ``ultralytics.utils.torch_utils``). Those call ``check_requirements``, which would pip-install ModelOpt in the
middle of a run; yolokd checks first and stops with one line naming the install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

MODELOPT_INSTALL = "pip install 'yolokd[int8]'"
REQUIRED_MODULES = {"modelopt": "nvidia-modelopt", "huggingface_hub": "huggingface_hub"}
"""Import name -> distribution. ModelOpt's torch plugins import huggingface_hub without declaring it (Ultralytics'
MODELOPT_REQUIREMENTS lists both for that reason)."""


class QuantizationUnavailableError(ValueError):
    """INT8 quantization was asked for and NVIDIA ModelOpt is not installed; the message names the install."""


def modelopt_problem() -> str | None:
    """Why ModelOpt cannot be used here (a missing distribution), or None when it can."""
    missing = [dist for module, dist in REQUIRED_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        return f"NVIDIA ModelOpt ({', '.join(missing)} not installed): {MODELOPT_INSTALL}"
    return None


def require_modelopt(purpose: str) -> None:
    """Raise QuantizationUnavailableError (one line: `purpose` needs ..., the install) when ModelOpt is missing."""
    problem = modelopt_problem()
    if problem:
        raise QuantizationUnavailableError(f"{purpose} needs {problem}")


def is_qat_quantize(value: object) -> bool:
    """True for Ultralytics' ``quantize`` values that make its trainer run INT8 QAT (8, "int8", "w8a8")."""
    from ultralytics.cfg import QUANTIZE_ALIASES

    return value is not None and QUANTIZE_ALIASES.get(str(value).lower()) == 8


def checkpoint_is_qat(path: str | Path) -> bool:
    """True when an Ultralytics checkpoint carries a ModelOpt quantization state (written by a QAT run).

    Read from the checkpoint dict itself, so no ModelOpt import is needed to tell (loading the model through
    ``ultralytics.YOLO`` would restore the quantizers and need ModelOpt).
    """
    import torch

    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as error:  # a damaged or foreign file raises pickle/zip errors of many types
        raise ValueError(f"model: {path} is not a readable checkpoint ({type(error).__name__}: {error})") from error
    return isinstance(checkpoint, dict) and bool(checkpoint.get("modelopt"))
