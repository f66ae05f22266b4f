#!/usr/bin/env python
r"""INT8 study: FP32 vs PTQ INT8 vs KD-QAT INT8 of one distilled student, mAP and ONNX Runtime CPU latency.

Every model is measured as it ships, an ONNX in ONNX Runtime, validated by Ultralytics on the data's val split:
    fp32        the student's FP32 ONNX (``yolokd export format=onnx``)
    ptq         its Q/DQ INT8 ONNX by ModelOpt PTQ on ``--calib-images`` train images (``int8=true``)
    kd_qat      per seed: ``yolokd qat CONFIG model=STUDENT seed=S`` (GT loss + the config's KD terms against its
                teacher, fake-quant student), then its Q/DQ ONNX
    plain_qat   with ``--plain-qat``, per seed: the same QAT with the KD methods removed (GT loss only): the control
                that tells what the teacher adds to QAT
Latency: ``yolokd benchmark`` of fp32, ptq and the first seed's kd_qat ONNX (batch 1, CPU, ``--threads``).
Summary: mean +- std over seeds, each row's mAP50-95 delta vs FP32, the share of PTQ's drop that KD-QAT recovers,
and issue 15's target (KD-QAT within 0.005 mAP50-95 of FP32 and at least half of PTQ's drop recovered).

Each finished step is cached as ``<out>/steps/<row>.json`` and reused (delete it to measure again), so an
interrupted study continues. Writes ``<out>/int8_study.{json,md}``.

The evidence benchmark (its distilled seed-0 student; ``distill.yaml`` is the experiment the study saved with it):
    python benchmarks/int8_study.py --student runs/yolokd_evidence/<run>/weights/best.pt \
        --config runs/yolokd_evidence/<run>/distill.yaml --seeds 0,1,2 --plain-qat --threads 1 --out runs/int8_study
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("YOLO_OFFLINE", "1")  # never reach a hub from a benchmark

from yolokd.config import load_experiment, parse_overrides
from yolokd.export.benchmark import run_benchmark
from yolokd.export.exporter import export_model
from yolokd.export.hardware import package_versions
from yolokd.quant.qat import QAT_SCHEDULE, qat_experiment

MAP = "metrics/mAP50-95(B)"
MAP50 = "metrics/mAP50(B)"
TARGET_GAP = 0.005  # KD-QAT within half a mAP50-95 point of FP32 (issue 15)
TARGET_RECOVERED = 0.5  # ... and at least half of PTQ's drop recovered


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True, help="the distilled FP32 student checkpoint (.pt)")
    parser.add_argument("--config", required=True, help="its experiment (YAML: teacher, distill, train arguments)")
    parser.add_argument("--data", help="data YAML (default: the config's)")
    parser.add_argument("--imgsz", type=int, help="input side, pixels (default: the config's)")
    parser.add_argument("--seeds", default="0,1,2", help="QAT seeds, comma list")
    parser.add_argument("--qat-epochs", type=int, default=QAT_SCHEDULE["epochs"], help="QAT epochs per seed")
    parser.add_argument("--calib-images", type=int, default=128, help="PTQ calibration images (train split)")
    parser.add_argument("--plain-qat", action="store_true", help="also QAT without KD (GT loss only), per seed")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more QAT overrides (batch=16 ...)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the latency benchmark")
    parser.add_argument("--latency-seconds", type=float, default=5.0, help="minimum seconds timed per model")
    parser.add_argument("--latency-runs", type=int, default=50, help="minimum iterations timed per model")
    parser.add_argument("--latency-warmup", type=float, default=2.0, help="warm-up seconds per model")
    parser.add_argument("--out", default="runs/int8_study", help="output folder")
    return parser.parse_args(argv)


def cached(path: Path, measure) -> dict[str, Any]:
    """The step's result from `path` if a previous run wrote it, else ``measure()`` written there."""
    if path.is_file():
        return json.loads(path.read_text())
    result = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def export_scores(checkpoint: Path, data: str, imgsz: int, **options: Any) -> dict[str, Any]:
    """Export `checkpoint` to ONNX with every check; the ONNX's and PyTorch's mAP, the check verdict, the files."""
    result = export_model(checkpoint, format="onnx", imgsz=imgsz, data=data, **options)
    found = result.report["checks"]["map"]
    scores = {
        "onnx": str(result.path),
        "report": str(result.files["report_md"]),
        "map50_95": found["exported"][MAP],
        "map50": found["exported"][MAP50],
        "pytorch_map50_95": found["pytorch"][MAP],
        "passed": result.report["passed"],
        "problems": result.problems,
    }
    if "fake_quant" in found:
        scores["fake_quant_map50_95"] = found["fake_quant"]["pytorch"][MAP]
    if "quantization" in result.report:
        scores["float_layers"] = [layer["name"] for layer in result.report["quantization"]["float_layers"]]
    return scores


def qat_step(args: argparse.Namespace, row: str, seed: int, data: str, imgsz: int, out: Path) -> dict[str, Any]:
    """Train one QAT run (kd_qat or plain_qat) and export its Q/DQ ONNX."""
    from yolokd.engine.trainer import train_experiment

    overrides: dict[str, Any] = {
        "model": str(Path(args.student).resolve()),
        "data": data,
        "imgsz": imgsz,
        "epochs": args.qat_epochs,
        "seed": seed,
        "project": str((out / "qat").resolve()),
        "name": f"{row}_seed{seed}",
        "exist_ok": True,
        **parse_overrides(args.set),
    }
    if row == "plain_qat":
        overrides.update(distill=[], teacher=None)
    run = train_experiment(qat_experiment(args.config, overrides))
    best = Path(shutil.copy(run / "weights" / "best.pt", out / f"{row}_seed{seed}.pt"))
    return {"seed": seed, "run": str(run), **export_scores(best, data, imgsz)}


def summarize(steps: dict[str, Any], latency: dict[str, Any]) -> dict[str, Any]:
    """Per row: mean/std mAP over seeds, delta vs FP32, latency; PTQ's drop, its share recovered, the target."""
    fp32 = steps["fp32"]["map50_95"]
    rows = {}
    for name in ("fp32", "ptq", "kd_qat", "plain_qat"):
        runs = steps.get(name)
        if runs is None:
            continue
        runs = runs if isinstance(runs, list) else [runs]
        values = [run["map50_95"] for run in runs]
        mean = statistics.fmean(values)
        rows[name] = {
            "seeds": [run.get("seed") for run in runs],
            "map50_95": mean,
            "map50_95_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "map50": statistics.fmean(run["map50"] for run in runs),
            "delta_vs_fp32": mean - fp32,
            "passed_checks": all(run["passed"] for run in runs),
            **latency.get(name, {}),
        }
    drop = fp32 - rows["ptq"]["map50_95"]
    kd_qat = rows.get("kd_qat", {}).get("map50_95")
    recovered = (kd_qat - rows["ptq"]["map50_95"]) / drop if kd_qat is not None and drop > 0 else None
    gap = fp32 - kd_qat if kd_qat is not None else None
    target = None
    if gap is not None:
        target = gap <= TARGET_GAP and (recovered is None or recovered >= TARGET_RECOVERED)
    return {"rows": rows, "ptq_drop": drop, "kd_qat_gap": gap, "recovered": recovered, "target_met": target}


def latency_rows(steps: dict[str, Any], args: argparse.Namespace, imgsz: int, data: str, out: Path) -> dict[str, Any]:
    """ONNX Runtime CPU latency (batch 1) of fp32, ptq and the first seed's kd_qat ONNX: p50 of inference and e2e."""
    models = {"fp32": steps["fp32"]["onnx"], "ptq": steps["ptq"]["onnx"]}
    if steps.get("kd_qat"):
        models["kd_qat"] = steps["kd_qat"][0]["onnx"]
    result = run_benchmark(
        list(models.values()),
        imgsz=imgsz,
        batch=1,
        device="cpu",
        threads=args.threads,
        warmup=args.latency_warmup,
        runs=args.latency_runs,
        seconds=args.latency_seconds,
        source=data,
        project=str(out),
        name="latency",
        plot=False,
    )
    by_model = {row["model"]: row for row in result.report["rows"]}
    rows = {}
    for name, path in models.items():
        stages = by_model[path].get("stages") or {}
        rows[name] = {
            "inference_p50_ms": (stages.get("inference") or {}).get("p50_ms"),
            "end_to_end_p50_ms": (stages.get("end_to_end") or {}).get("p50_ms"),
        }
    return rows


def markdown(study: dict[str, Any]) -> str:
    """The table, the derived numbers and how they were made."""
    summary, settings = study["summary"], study["settings"]

    def number(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    lines = [
        f"# INT8 study: {Path(settings['student']).name} ({study['created']})",
        "",
        f"- experiment `{settings['config']}`, data `{settings['data']}`, imgsz {settings['imgsz']}; QAT "
        f"{settings['qat_epochs']} epochs x seeds {settings['seeds']}; PTQ on {settings['calib_images']} train images",
        f"- latency: ONNX Runtime CPU, batch 1, {settings['threads']} thread(s), p50; versions: "
        + ", ".join(f"{k} {v}" for k, v in study["versions"].items()),
        "",
        "| model | seeds | mAP50-95 | +- std | mAP50 | delta vs FP32 | checks | infer p50 ms | e2e p50 ms |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, row in summary["rows"].items():
        seeds = ",".join(str(seed) for seed in row["seeds"] if seed is not None) or "-"
        lines.append(
            f"| {name} | {seeds} | {row['map50_95']:.4f} | {row['map50_95_std']:.4f} | {row['map50']:.4f} | "
            f"{row['delta_vs_fp32']:+.4f} | {'passed' if row['passed_checks'] else 'FAILED'} | "
            f"{number(row.get('inference_p50_ms'), '.2f')} | {number(row.get('end_to_end_p50_ms'), '.2f')} |"
        )
    lines += [
        "",
        f"- PTQ drop (FP32 - PTQ): {summary['ptq_drop']:.4f} mAP50-95; KD-QAT gap (FP32 - KD-QAT): "
        f"{number(summary['kd_qat_gap'], '.4f')}; share of PTQ's drop recovered by KD-QAT: "
        f"{number(summary['recovered'], '.2f')}",
        f"- target (gap <= {TARGET_GAP}, recovered >= {TARGET_RECOVERED}): "
        + {True: "met", False: "NOT met", None: "-"}[summary["target_met"]],
        "",
        f"Command: `{settings['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the study; returns it (also written to ``<out>/int8_study.{json,md}``)."""
    import sys

    args = parse_args(argv)
    out = Path(args.out)
    experiment = load_experiment(args.config)
    data = str(args.data or experiment.train_args["data"])
    imgsz = int(args.imgsz or experiment.train_args.get("imgsz", 640))
    seeds = [int(seed) for seed in str(args.seeds).split(",") if seed.strip()]
    student = Path(args.student)
    copy = out / "fp32.pt"  # exports are written next to their checkpoint: keep them in the study's folder
    if not copy.is_file():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(student, copy)
    ptq_copy = out / "ptq.pt"
    if not ptq_copy.is_file():
        shutil.copy(student, ptq_copy)
    steps: dict[str, Any] = {
        "fp32": cached(out / "steps" / "fp32.json", lambda: export_scores(copy, data, imgsz)),
        "ptq": cached(
            out / "steps" / "ptq.json",
            lambda: export_scores(ptq_copy, data, imgsz, int8=True, calib_images=args.calib_images),
        ),
    }
    for row in ("kd_qat", "plain_qat") if args.plain_qat else ("kd_qat",):
        steps[row] = [
            cached(
                out / "steps" / f"{row}_seed{seed}.json", lambda r=row, s=seed: qat_step(args, r, s, data, imgsz, out)
            )
            for seed in seeds
        ]
    latency = latency_rows(steps, args, imgsz, data, out)
    study = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "student": str(student),
            "config": str(args.config),
            "data": data,
            "imgsz": imgsz,
            "seeds": seeds,
            "qat_epochs": args.qat_epochs,
            "calib_images": args.calib_images,
            "threads": args.threads,
            "qat_overrides": args.set,
            "command": " ".join(["python benchmarks/int8_study.py", *(argv if argv is not None else sys.argv[1:])]),
        },
        "versions": package_versions(("yolokd", "ultralytics", "torch", "onnxruntime", "nvidia-modelopt")),
        "steps": steps,
        "summary": summarize(steps, latency),
    }
    (out / "int8_study.json").write_text(json.dumps(study, indent=1) + "\n")
    (out / "int8_study.md").write_text(markdown(study))
    print(markdown(study))
    return study


if __name__ == "__main__":
    main()
