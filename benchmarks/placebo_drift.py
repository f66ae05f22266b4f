"""Where a placebo KD run leaves its baseline: per parameter, how far the two students are apart after each step.

    python benchmarks/placebo_drift.py runs/yolokd_evidence_scratch --steps 1,2,4,8,16,30,60,120

Trains the study's baseline and a placebo (a method at a negligible ``--grad-share``; default the study's placebo
row, BCKD at 1e-6) with the study's own arguments and teacher for one seed, snapshots both students (and their EMA)
after the listed optimiser-facing batches, and stops. For every tensor it reports ``apart`` = ||placebo - baseline||
over ``moved`` = ||baseline - initial||: about the share (1e-6) where the placebo's gradient is a small addition to
the GT loss's, about 1 where the two runs took different steps. A tensor the GT loss does not train but AdamW steps
at full size for any gradient above its eps would show ``apart`` near 1 from the first steps; chaos shows every
tensor's ``apart`` growing together, step by step. Runs go to a scratch folder, never to the study's cache.

Its first use found a bug, not a mechanism: the baseline trained first in the process and the placebo trained after
it were ``apart`` by more than they had ``moved`` after one step, because a process's first trainer drew other
augmentations (fixed in :mod:`yolokd.engine.seeding`; both runs here are now paired by their seed alone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
from pathlib import Path

import torch

from yolokd.config import load_experiment
from yolokd.engine.trainer import _trainer_class
from yolokd.evaluation.study import PLACEBO_DISTILL


class EnoughStepsError(Exception):
    """Raised from the batch callback once the last snapshot is taken."""


def snapshots(config: dict, steps: list[int]) -> dict[int, dict[str, dict[str, torch.Tensor]]]:
    """Train `config`; {batch: {"model": state, "ema": state}} after each listed batch (0 = before the first)."""
    experiment = load_experiment(config)
    trainer = _trainer_class(experiment, None)(experiment, overrides=dict(experiment.train_args))
    taken: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    count = [0]

    def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: value.detach().float().clone() for name, value in module.state_dict().items()}

    def on_start(trainer) -> None:
        taken[0] = {"model": state(trainer.model), "ema": state(trainer.ema.ema)}

    def on_batch_end(trainer) -> None:
        count[0] += 1
        if count[0] in steps:
            taken[count[0]] = {"model": state(trainer.model), "ema": state(trainer.ema.ema)}
        if count[0] >= max(steps):
            raise EnoughStepsError

    trainer.add_callback("on_train_epoch_start", lambda t: taken or on_start(t))
    trainer.add_callback("on_train_batch_end", on_batch_end)
    with contextlib.suppress(EnoughStepsError):
        trainer.train()
    return taken


def module_of(name: str) -> str:
    """``model.22.cv2.2.0.conv.weight`` -> ``22.cv2.2`` (a head branch of one level), ``model.4.m.0.cv1...`` -> ``4``.

    A detection head's branches are indexed by level (``cv2.<level>``); a block's own ``cv2`` is followed by a
    layer name, so the digit tells them apart without knowing the head's index."""
    parts = name.split(".")[1:]
    if len(parts) > 2 and parts[1] in {"cv2", "cv3"} and parts[2].isdigit():
        return ".".join(parts[:3])
    return parts[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    (placebo,) = PLACEBO_DISTILL
    parser.add_argument("--method", default=placebo["loss"])
    parser.add_argument("--grad-share", type=float, default=placebo["grad_share"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", default="1,2,4,8,16,30,60,120")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    settings = json.loads((args.study / "study.json").read_text())["settings"]
    steps = sorted(int(s) for s in args.steps.split(","))
    scratch = Path(tempfile.mkdtemp(prefix="placebo_drift_"))
    base = {**settings["train_args"], "seed": args.seed, "project": str(scratch), "exist_ok": True}
    entry = {"loss": args.method, "grad_share": args.grad_share, "layer_share": None}
    baseline = snapshots({**base, "name": "baseline"}, steps)
    kd = snapshots({**base, "name": "placebo", "teacher": settings["teacher"], "distill": [entry]}, steps)

    start = baseline[0]["model"]
    lines = [f"Placebo {args.method} at grad_share {args.grad_share:g} against the baseline, seed {args.seed}", ""]
    for step in steps:
        for which in ("model", "ema"):
            rows, groups = [], {}
            for name, b in baseline[step][which].items():
                if not b.is_floating_point() or name.endswith("num_batches_tracked"):
                    continue
                apart = (kd[step][which][name] - b).norm().item()
                moved = (b - start[name]).norm().item()
                rows.append((apart / max(moved, 1e-30), apart, moved, name))
                group = groups.setdefault(module_of(name), [0.0, 0.0])
                group[0] += apart**2
                group[1] += moved**2
            total_apart = math.sqrt(sum(a**2 for _, a, _, _ in rows))
            total_moved = math.sqrt(sum(m**2 for _, _, m, _ in rows))
            lines.append(f"## batch {step}, {which}: all tensors apart/moved {total_apart / total_moved:.3g}")
            lines.append("")
            lines.append("| tensor | apart / moved | apart | moved |")
            lines.append("|---|---:|---:|---:|")
            for ratio, apart, moved, name in sorted(rows, reverse=True)[: args.top]:
                lines.append(f"| {name} | {ratio:.3g} | {apart:.3g} | {moved:.3g} |")
            ranked = sorted(groups.items(), key=lambda item: -math.sqrt(item[1][0] / max(item[1][1], 1e-60)))
            summary = ", ".join(f"{g} {math.sqrt(a / max(m, 1e-60)):.2g}" for g, (a, m) in ranked[:8])
            lines.append("")
            lines.append(f"by module (apart/moved): {summary}")
            lines.append("")
    text = "\n".join(lines) + "\n"
    out = args.study / f"placebo_drift_{args.method}_{args.grad_share:g}_seed{args.seed}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
