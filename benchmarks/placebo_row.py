"""A placebo row beside a finished `yolokd study`: what a KD run with next to no KD does to the paired comparison.

A study pairs every KD run with the baseline of the same seed: same data order, augmentation and initial weights.
On students trained from scratch a run is chaotic, so any change to the gradients, however small, sends it down
another trajectory. This script trains a row whose method is scaled to a negligible share of the GT loss (default:
BCKD at `grad_share` 1e-6, which moves no layer measurably in one step) under the study's own train arguments and
teacher, and reports its seed-paired difference from the study's baseline with the study's noise rule. If the
placebo lands beyond 2 SE, the study's pairing cannot tell a small effect from a perturbation on that benchmark.

    python benchmarks/placebo_row.py runs/yolokd_evidence_scratch            # BCKD at grad_share 1e-6, seeds 0-2
    python benchmarks/placebo_row.py runs/yolokd_evidence_scratch --method pgd --grad-share 1e-6 --jobs 2
    python benchmarks/placebo_row.py runs/yolokd_evidence_scratch --method none --lr-factor 1.000001

``--method none`` trains no KD at all, only the baseline with its learning rate multiplied by ``--lr-factor``: a
perturbation of every layer's step that no method's gradient is part of, to tell chaos apart from what a KD term
does to layers the GT loss does not train (AdamW steps those at full size for any gradient well above its eps).

Runs are cached in the study's folder like the study's own (row ``placebo_<method>_<share>`` or
``placebo_lr<factor>``), so a rerun reads them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from yolokd.evaluation.stats import paired_gain
from yolokd.evaluation.study import PLACEBO_DISTILL, StudyRow, run_all, run_args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a finished study's folder (its study.json)")
    (placebo,) = PLACEBO_DISTILL  # the defaults are `yolokd study placebo=true`'s row
    parser.add_argument("--method", default=placebo["loss"])
    parser.add_argument("--grad-share", type=float, default=placebo["grad_share"])
    parser.add_argument("--lr-factor", type=float, default=1.0, help="multiplies lr0 (with --method none)")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()

    report = json.loads((args.study / "study.json").read_text())
    settings = report["settings"]
    baseline = {run["seed"]: run["map50_95"] for run in report["runs"] if run["row"] == "baseline"}
    if not baseline:
        raise SystemExit(f"{args.study / 'study.json'} has no baseline row; run the study first")
    train_args = dict(settings["train_args"])
    if args.method == "none":
        train_args["lr0"] = train_args["lr0"] * args.lr_factor
        row, what = StudyRow(f"placebo_lr{args.lr_factor}", []), f"no KD, lr0 x {args.lr_factor}"
    else:
        entry = {"loss": args.method, "grad_share": args.grad_share, "layer_share": None}
        name, what = f"placebo_{args.method}_{args.grad_share:g}", f"{args.method} at grad_share {args.grad_share:g}"
        row = StudyRow(name, [entry])
    root = Path(settings["out"])
    runs = [(row, seed, run_args(train_args, root, row, seed)) for seed in sorted(baseline)]
    scores = {score.seed: score.map50_95 for score, _ in run_all(runs, settings["teacher"], None, args.jobs)}
    gain = paired_gain(scores, baseline)
    lines = [
        f"Placebo row {row.name} ({what}) beside {args.study}: {settings['environment']}",
        "",
        "| seed | baseline | placebo | difference |",
        "|---:|---:|---:|---:|",
        *(f"| {s} | {baseline[s]:.4f} | {scores[s]:.4f} | {scores[s] - baseline[s]:+.4f} |" for s in sorted(scores)),
        "",
        f"Paired difference {gain.mean:+.4f} ± {gain.se:.4f} SE: {gain.verdict} by the study's 2 SE rule.",
    ]
    text = "\n".join(lines) + "\n"
    (args.study / f"{row.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
