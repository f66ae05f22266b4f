"""``DenseDetectionModel``: an Ultralytics ``DetectionModel`` whose last YAML row is one of yolokd's dense heads.

Ultralytics' ``parse_model`` builds every row of a model YAML, but picks each module's input widths by identity
checks against its own classes (``m in {Detect, Segment, ...}``): a head class from another package that reads
several levels cannot get its widths from it. So the YAML is parsed by Ultralytics with the dense head's row read as
a ``Detect`` row (same inputs, same ``nc``), which makes Ultralytics compute the list of input widths with its own
width/scale rules; that stand-in is then replaced by the dense head built with those widths. Everything else (the
backbone, the neck, ``TorchVision`` backbones, scales such as ``gfl-yolov8n.yaml`` -> ``gfl-yolov8.yaml`` + scale n)
is Ultralytics' own parsing.

The loss is the head's own (``init_criterion`` -> ``head.build_criterion``). A trained model pickles as this class
and its head class: loading ``best.pt`` (plain ``ultralytics.YOLO`` included) needs yolokd installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ultralytics.nn.tasks import DetectionModel, parse_model, yaml_model_load
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import initialize_weights

from yolokd.models.dense_head import SharedTowerDetect
from yolokd.models.fcos import FCOSDetect
from yolokd.models.gfl import GFLDetect
from yolokd.models.retinanet import RetinaNetDetect

DENSE_HEADS: dict[str, type[SharedTowerDetect]] = {
    "GFLDetect": GFLDetect,
    "FCOSDetect": FCOSDetect,
    "RetinaNetDetect": RetinaNetDetect,
}
MODELS_DIR = Path(__file__).resolve().parents[1] / "cfg" / "models"  # package data: yolokd/cfg/models/*.yaml
STRIDE_PROBE = 256  # input side of the dry forward that measures strides (Ultralytics uses the same)


def resolve_model_yaml(cfg: str | Path) -> str | Path:
    """A model YAML name as given if that file exists, else the one shipped in ``yolokd/cfg/models`` of that name.

    Scaled names resolve as in Ultralytics: ``gfl-yolov8n.yaml`` is ``gfl-yolov8.yaml`` at scale n (the returned path
    keeps the scale letter; Ultralytics' ``yaml_model_load`` reads it).
    """
    path = Path(cfg)
    if path.suffix not in {".yaml", ".yml"} or path.exists():
        return cfg
    shipped = MODELS_DIR / path.name
    unscaled = MODELS_DIR / path.name.replace(path.stem, path.stem[:-1]) if path.stem[-1:] in "nslmx" else None
    if shipped.exists() or (unscaled is not None and unscaled.exists()):
        return shipped
    return cfg


def dense_head_name(cfg: str | Path | dict | None) -> str | None:
    """The dense head named in the last row of a model YAML (a path, a shipped name or a dict), or None."""
    if isinstance(cfg, str | Path):
        resolved = resolve_model_yaml(cfg)
        if Path(resolved).suffix not in {".yaml", ".yml"}:
            return None
        try:
            cfg = yaml_model_load(resolved)
        except FileNotFoundError:
            return None
    if not isinstance(cfg, dict) or not cfg.get("head"):
        return None
    name = cfg["head"][-1][2]
    return name if name in DENSE_HEADS else None


def parse_dense_model(d: dict[str, Any], ch: int) -> tuple[nn.Sequential, list[int]]:
    """Ultralytics' ``parse_model`` for a YAML whose last row is a dense head (see the module docstring)."""
    head_row = d["head"][-1]
    head_class = DENSE_HEADS[head_row[2]]
    stand_in_yaml = copy.deepcopy(d)
    stand_in_yaml["head"][-1] = [head_row[0], head_row[1], "Detect", [head_row[3][0]]]
    layers, save = parse_model(stand_in_yaml, ch=ch, verbose=False)
    stand_in = layers[-1]
    widths = [tower[0].conv.in_channels for tower in stand_in.cv2]
    head = head_class(stand_in.nc, *head_row[3][1:], reg_max=d.get("reg_max", 16), ch=widths)
    head.i, head.f, head.type = stand_in.i, stand_in.f, f"{head_class.__module__}.{head_class.__name__}"
    head.np = sum(p.numel() for p in head.parameters())
    layers[-1] = head
    return layers, save


class DenseDetectionModel(DetectionModel):
    """A detection model with a dense head of yolokd (GFL, FCOS, RetinaNet): Ultralytics' model, the head's own loss.

    Args:
        cfg: model YAML (path, shipped name such as ``gfl-yolov8n.yaml``, or dict).
        ch: input channels.
        nc: C, overrides the YAML's ``nc``.
        verbose: print the model summary.
    """

    def __init__(
        self, cfg: str | Path | dict = "gfl-yolov8n.yaml", ch: int = 3, nc: int | None = None, verbose: bool = True
    ) -> None:
        nn.Module.__init__(self)  # not DetectionModel.__init__: its parse_model cannot build the dense head
        self.yaml = cfg if isinstance(cfg, dict) else yaml_model_load(resolve_model_yaml(cfg))
        name = self.yaml["head"][-1][2]
        if name not in DENSE_HEADS:
            raise ValueError(
                f"{self.yaml.get('yaml_file', 'this model YAML')} ends in {name}, not a yolokd dense head "
                f"({', '.join(DENSE_HEADS)}); build it with ultralytics' DetectionModel"
            )
        self.yaml["channels"] = ch
        if nc and nc != self.yaml["nc"]:
            LOGGER.info(f"Overriding model.yaml nc={self.yaml['nc']} with nc={nc}")
            self.yaml["nc"] = nc
        self.model, self.save = parse_dense_model(copy.deepcopy(self.yaml), ch)
        self.names = {i: f"{i}" for i in range(self.yaml["nc"])}
        self.inplace = self.yaml.get("inplace", True)
        head = self.model[-1]
        self.model.eval()  # measure strides as DetectionModel does, without touching norm statistics
        head.training = True
        with torch.no_grad():
            feats = self.forward(torch.zeros(1, ch, STRIDE_PROBE, STRIDE_PROBE))["feats"]
        head.stride = torch.tensor([STRIDE_PROBE / f.shape[-2] for f in feats])
        self.stride = head.stride
        self.model.train()
        initialize_weights(self)
        if verbose:
            self.info()
            LOGGER.info("")

    def init_criterion(self) -> object:
        """The dense head's own loss (GFL: QFL + DFL + GIoU with ATSS)."""
        return self.model[-1].build_criterion(self)
