"""Every method's gradient share of the GT loss's at its paper weights, on one teacher-student pair.

Runs ``yolokd balance`` (``weight_mode: paper``) once per registered method and tabulates what the README's KD
balance section quotes: each method's share, its dominant term, the scale ``grad_share: 1`` would give it, and its
layer concentration (:func:`yolokd.engine.balance.layer_concentration`: why feature-level methods default to a
``grad_share`` of 0.1, :data:`yolokd.losses.base.FEATURE_GRAD_SHARE`).
Run it once with the student at initialisation (``--student yolov8n.yaml``) and once with a trained student
(``--student runs/.../best.pt``) to see how the pull moves during training.

    python benchmarks/balance_shares.py --data runs/yolokd_evidence/data/data.yaml \
        --teacher yolokd/assets/synthetic_yolov8s_scratch.pt --student yolov8n.yaml --out balance_init.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from yolokd.config import load_experiment
from yolokd.demo import CPU_SCHEDULE
from yolokd.engine.balance import GT_TOTAL
from yolokd.engine.trainer import measure_experiment_balance
from yolokd.losses import LOSSES


def measure(data: str, teacher: str, student: str, imgsz: int, batch: int, batches: int) -> dict:
    """{method: {share, scale_at_share_1, terms: {term: share}}, "gt": {component: [value, grad norm]}}."""
    result: dict = {"methods": {}, "settings": dict(data=data, teacher=teacher, student=student, imgsz=imgsz)}
    with tempfile.TemporaryDirectory() as project:
        for name, loss in LOSSES.items():
            if loss.task is not None:  # task terms (masks, keypoints, angles) need a student of that task
                continue
            config = {
                **CPU_SCHEDULE, "model": student, "data": data, "imgsz": imgsz, "batch": batch, "device": "cpu",
                "seed": 0, "project": project, "name": name, "verbose": False, "teacher": teacher,
                "distill": [{"loss": name}], "balance": {"weight_mode": "paper", "batches": batches},
            }  # fmt: skip
            report, _ = measure_experiment_balance(load_experiment(config))
            gt_grad = report.gt[GT_TOTAL].grad_norm
            (method,) = report.methods.values()
            result["methods"][name] = {
                "share": method.measured_share,
                "concentration": method.concentration,
                "default_grad_share": method.grad_share,
                "scale_at_share_1": 1.0 / method.measured_share,
                "terms": {term: report.terms[term].grad_norm / gt_grad for term in method.terms},
            }
            result["gt"] = {key: [value.value, value.grad_norm] for key, value in report.gt.items()}
    return result


def markdown(result: dict) -> str:
    """The README's table, methods by share (largest first)."""
    gt = result["gt"][GT_TOTAL]
    lines = [
        f"GT loss {gt[0]:.3g} per batch, gradient norm {gt[1]:.4g}.",
        "",
        "| method | share at paper weights | dominant term (its share) | auto scale at `grad_share` 1 "
        "| layer concentration (q90) | default `grad_share` |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, method in sorted(result["methods"].items(), key=lambda item: -item[1]["share"]):
        term, share = max(method["terms"].items(), key=lambda item: item[1])
        concentration = method.get("concentration")
        shown = "-" if concentration is None else f"{concentration:.3g}"
        lines.append(
            f"| `{name}` | {method['share']:.3g} | `{term}` ({share:.3g}) | {method['scale_at_share_1']:.3g} "
            f"| {shown} | {method['default_grad_share']:g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", default="yolov8n.yaml")
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = measure(args.data, args.teacher, args.student, args.imgsz, args.batch, args.batches)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
