"""Does CrossKD's channel correspondence make sense before training? A diagnostic for the fine-tuned regime.

CrossKD feeds the student's stage-0 box and cls pre-activations (a 1x1 aligner where widths differ, identity where
they match, then per-channel moment alignment) into the teacher's remaining head layers and asks the cross-head
predictions to mimic the teacher's. Channel i of a student trained on its own is not channel i of the teacher: at
equal widths the identity map pairs unrelated channels, so the KD target asks a pretrained student to rebuild its
head basis. This script measures, on real images and without any training step, the cross-head box KL (CrossKD's
``crosskd_loc`` maths: per-side KL of the teacher's DFL bins, weighted by the teacher's top class score) and the
cls binary KD for three maps from the student's features to the teacher's input space:

- ``identity``: the paper's pairing, ``aligner_fit: false`` (identity at equal widths, a random 1x1 init where
  widths differ);
- ``least squares``: ``aligner_fit: true``, the 1x1 map that best predicts the teacher's pre-activation from the
  student's (:class:`yolokd.losses.common.FittedAligner`), fitted on half the images and evaluated on the other half;
- ``teacher``: the teacher's own features (0 by construction, a sanity check).

    python benchmarks/crosskd_basis.py --data DATA.yaml --student S.pt|S.yaml --teacher T.pt [--images 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from ultralytics.nn.tasks import DetectionModel, load_checkpoint

from yolokd.heads.recorder import keep_preactivations
from yolokd.losses.bckd import bckd_cls_loss
from yolokd.losses.common import FittedAligner
from yolokd.losses.crosskd import moment_align
from yolokd.losses.ld import dfl_kl


def load_images(data_yaml: Path, count: int) -> torch.Tensor:
    """The first ``count`` validation images of an Ultralytics data set, (N, 3, H, W) RGB in [0, 1]."""
    folder = data_yaml.parent / "images" / "val"
    paths = sorted(folder.iterdir())[:count]
    images = [cv2.imread(str(p))[:, :, ::-1] for p in paths]
    return torch.from_numpy(np.stack(images).copy()).permute(0, 3, 1, 2).float() / 255


def head_pass(model: torch.nn.Module, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Stage-0 pre-activations ``{part: [L x (N, D, H, W)]}`` of a Detect head."""
    head = model.model[-1]
    stages: dict[str, list] = {"box": [], "cls": []}
    handles = [
        branch[level][0].bn.register_forward_hook(lambda _m, _i, out, part=part: stages[part].append(out))
        for part, branch in (("box", head.cv2), ("cls", head.cv3))
        for level in range(head.nl)
    ]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return stages


def tail(head: torch.nn.Module, part: str, level: int, x: torch.Tensor) -> torch.Tensor:
    """The teacher's layers after the stage-0 pre-activation: SiLU, stage 1, predictor."""
    branch = (head.cv2 if part == "box" else head.cv3)[level]
    return branch[2](branch[1](branch[0].act(x)))


def kd_terms(teacher: torch.nn.Module, cross: dict, own: dict) -> tuple[float, float]:
    """(cls binary KD / anchor, box KL weighted by the teacher's top score) of cross-head vs teacher outputs."""
    head = teacher.model[-1]
    cls_sum, loc_sum, weight_sum, anchors = 0.0, 0.0, 0.0, 0
    for level in range(head.nl):
        t_cls = tail(head, "cls", level, own["cls"][level]).permute(0, 2, 3, 1).reshape(-1, head.nc)
        c_cls = tail(head, "cls", level, cross["cls"][level]).permute(0, 2, 3, 1).reshape(-1, head.nc)
        t_box = tail(head, "box", level, own["box"][level]).permute(0, 2, 3, 1).reshape(-1, 4, head.reg_max)
        c_box = tail(head, "box", level, cross["box"][level]).permute(0, 2, 3, 1).reshape(-1, 4, head.reg_max)
        weight = t_cls.amax(-1).sigmoid()
        cls_sum += float(bckd_cls_loss(c_cls, t_cls))
        loc_sum += float((weight * dfl_kl(c_box, t_box, 1.0) / 4).sum())
        weight_sum += float(weight.sum())
        anchors += t_cls.shape[0]
    return cls_sum / anchors, loc_sum / weight_sum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = load_checkpoint(args.teacher)[0].float().eval()
    if args.student.endswith(".yaml"):  # a student at initialisation, as a from-scratch run starts
        student = DetectionModel(args.student, nc=teacher.model[-1].nc, verbose=False).eval()
    else:
        student = load_checkpoint(args.student)[0].float().eval()
    for model in (student, teacher):  # load_checkpoint makes activations in-place: they would overwrite the records
        keep_preactivations(model)
    images = load_images(args.data, args.images)
    fit, held = images[: len(images) // 2], images[len(images) // 2 :]
    s_fit, t_fit = head_pass(student, fit), head_pass(teacher, fit)
    s_held, t_held = head_pass(student, held), head_pass(teacher, held)
    levels = len(t_held["box"])
    maps: dict[str, dict] = {"identity": {}, "least squares": {}, "teacher": t_held}
    with torch.no_grad():
        for part in ("box", "cls"):
            widths = s_held[part][0].shape[1], t_held[part][0].shape[1]
            random_aligner = torch.nn.Conv2d(widths[0], widths[1], 1) if widths[0] != widths[1] else torch.nn.Identity()
            pairs = zip(s_held[part], t_held[part], strict=True)
            maps["identity"][part] = [moment_align(random_aligner(s), t) for s, t in pairs]
            aligner = FittedAligner((widths[0],) * levels, (widths[1],) * levels)
            aligner.fit(s_fit[part], t_fit[part])  # what aligner_fit does on a run's first batch
            pairs = zip(aligner(s_held[part]), t_held[part], strict=True)
            maps["least squares"][part] = [moment_align(s, t) for s, t in pairs]
        print(f"student {args.student}, teacher {args.teacher}, {len(held)} held-out images\n")
        print("| student -> teacher map | cls binary KD / anchor | box KL (teacher-score weighted) |")
        print("|---|---:|---:|")
        for name, cross in maps.items():
            cls_term, loc_term = kd_terms(teacher, cross, t_held)
            print(f"| {name} | {cls_term:.4f} | {loc_term:.4f} |")


if __name__ == "__main__":
    main()
