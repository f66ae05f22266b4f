#!/usr/bin/env bash
# GPU acceptance check (issue 12): from a fresh clone on a machine with an NVIDIA GPU, in about 8 minutes:
#   1. install yolokd with the gpu, trt and dev extras (+ NVIDIA ModelOpt where TensorRT has no FP16/INT8 flags)
#   2. the CUDA-marked tests (TensorRT export/build/bench; skipped with the reason where something is missing)
#   3. a 2-epoch AMP KD run with MGD (trainable connectors) and off_last_epochs=1 on the synthetic set
#   4. engine exports, each with its checks (detections matched with PyTorch's, mAP delta, same graph as a plain
#      model): the distilled student in FP16 (no KD residue), and the shipped YOLOv8s teacher (a trained model, so
#      parity and mAP compare real detections) in FP16 and INT8
#   5. yolokd benchmark on the student's .pt (fp32, fp16), .onnx (onnxruntime CUDA), .engine and .plan, and the
#      teacher's FP16 and INT8 engines
#   6. deploy/jetson/run.py build and bench on the student's FP16 export's ONNX
# and prints one summary table (Markdown, also in $WORK/summary.md). Every step logs to $WORK/logs/<step>.log;
# the first failing step prints its log's tail and the table so far, and the script exits 1. (Step functions run in
# an `if`, where bash ignores `set -e`: each of their commands ends in `|| return` or is their last.)
#
#   bash benchmarks/gpu_check.sh [WORK]        # WORK defaults to runs/gpu_check
#   SKIP_INSTALL=1 bash benchmarks/gpu_check.sh  # reuse the current environment
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mkdir -p "${1:-runs/gpu_check}" && cd "${1:-runs/gpu_check}" && pwd)
mkdir -p "$WORK/logs"
export YOLO_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON=${PYTHON:-python}
IMGSZ=160
TEACHER="$REPO/yolokd/assets/synthetic_yolov8s.pt" # YOLOv8s trained on the synthetic "distinct" scenes at 160 px
STEPS=()
STARTED=$SECONDS

summary() {
    "$PYTHON" - "$WORK" ${STEPS[@]+"${STEPS[@]}"} <<'EOF' | tee "$WORK/summary.md"
import csv, json, sys
from pathlib import Path

work, steps = Path(sys.argv[1]), [s.split("|") for s in sys.argv[2:]]
print("| step | status | seconds | result |\n|---|---|---:|---|")
def read(path):
    return json.loads(path.read_text()) if path.is_file() else None
def num(value, digits=4):
    return "-" if value is None else f"{value:.{digits}g}"
notes = {}
results = work / "runs" / "amp_mgd" / "results.csv"
if results.is_file():
    rows = list(csv.DictReader(results.open()))
    kd = [key for key in rows[0] if key.startswith("train/") and key.split("/")[1] not in {"box_loss", "cls_loss", "dfl_loss"}]
    per_epoch = "; ".join(f"epoch {r['epoch'].strip()}: " + ", ".join(f"{k[6:]}={float(r[k]):.4g}" for k in kd) for r in rows)
    last_off = all(float(rows[-1][k]) == 0 for k in kd) and any(float(rows[0][k]) > 0 for k in kd)
    notes["train"] = f"{per_epoch}; KD off in the last epoch: {last_off}; mAP50-95 {float(rows[-1]['metrics/mAP50-95(B)']):.4f}"
for folder in ("student_fp16", "teacher_fp16", "teacher_int8"):
    report = read(work / folder / "best.export.json")
    if report:
        checks = report["checks"]
        found = checks["parity"]["detections"]
        delta = checks.get("map", {}).get("delta", {}).get("metrics/mAP50-95(B)")
        plain = checks.get("plain", {}).get("same_graph")
        notes[f"export_{folder}"] = (
            f"passed {report['passed']}; recall {num(found['recall'])} of {found['reference_boxes']} boxes, mean IoU "
            f"{num(found['mean_iou'])}, mean score diff {num(found['score_mean_abs'])}; mAP50-95 delta {num(delta)}; "
            f"same graph as plain {plain}; raw max diff {num(checks['parity'].get('max_abs_diff'))} (information)"
        )
for name, path in (("benchmark", work / "bench" / "gpu" / "benchmark.json"), ("jetson_bench", work / "jetson" / "report" / "benchmark.json")):
    report = read(path)
    if report:
        cells = []
        for row in report["rows"]:
            label = f"{Path(row['model']).name} {row.get('runtime')} {row.get('precision')}"
            if row.get("status") != "ok":
                cells.append(f"{label}: skipped ({row.get('reason')})")
                continue
            stages = row["stages"]
            gpu = (stages.get("gpu_compute") or {}).get("p50_ms")
            cells.append(f"{label}: p50 {num(stages['end_to_end']['p50_ms'], 3)} ms end to end, GPU {num(gpu, 3)} ms")
        clocks = report["environment"].get("gpu_clocks")
        notes[name] = "; ".join(cells) + (f" (SM clock {clocks['sm_mhz']}/{clocks['sm_max_mhz']} MHz)" if clocks else "")
for name, status, seconds in steps:
    print(f"| {name} | {status} | {seconds} | {notes.get(name, '')} |")
EOF
    echo "total: $((SECONDS - STARTED)) s; logs and outputs in $WORK"
}

step() { # step NAME COMMAND...: run it with its output in logs/NAME.log; stop loudly on failure
    local name=$1 start=$SECONDS
    shift
    echo "== $name: $*"
    if "$@" >"$WORK/logs/$name.log" 2>&1; then
        STEPS+=("$name|ok|$((SECONDS - start))")
    else
        local code=$?
        STEPS+=("$name|FAILED (exit $code)|$((SECONDS - start))")
        echo "!!!!! gpu_check: step '$name' FAILED (exit $code): $*" >&2
        echo "!!!!! last lines of $WORK/logs/$name.log:" >&2
        tail -n 40 "$WORK/logs/$name.log" >&2
        summary
        exit 1
    fi
}

environment() {
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv || return
    "$PYTHON" - <<'EOF'
import onnxruntime, tensorrt, torch
assert torch.cuda.is_available(), "torch sees no CUDA GPU"
providers = onnxruntime.get_available_providers()
assert "CUDAExecutionProvider" in providers, f"onnxruntime has no CUDA provider: {providers}"
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}; tensorrt {tensorrt.__version__}; {providers}")
EOF
}

install() {
    "$PYTHON" -m pip install -e "${REPO}[gpu,trt,dev]" || return
    # onnxruntime (a dependency) and onnxruntime-gpu (the gpu extra) install the same module: keep the GPU build
    if ! "$PYTHON" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
        "$PYTHON" -m pip uninstall -y onnxruntime onnxruntime-gpu || return
        "$PYTHON" -m pip install "onnxruntime-gpu>=1.18" || return
    fi
    # TensorRT without FP16/INT8 builder flags (11.x) builds reduced precision from the ONNX: Ultralytics runs ModelOpt
    if "$PYTHON" -c "import sys, tensorrt as t; sys.exit(hasattr(t.BuilderFlag, 'FP16'))"; then
        "$PYTHON" -m pip install "nvidia-modelopt[onnx]>=0.44" || return
    fi
}

write_config() {
    cat >"$WORK/kd_amp_mgd.yaml" <<EOF
# written by benchmarks/gpu_check.sh: 2 epochs, AMP on GPU 0, MGD (trainable connectors), KD off in the last epoch
model: yolov8n.yaml
data: $DATA
teacher: $TEACHER
epochs: 2
imgsz: $IMGSZ
batch: 32
device: 0
amp: true
workers: 2
seed: 0
plots: false
project: $WORK/runs
name: amp_mgd
exist_ok: true
distill:
  - loss: mgd
schedule:
  warmup_epochs: 0
  off_last_epochs: 1
EOF
    [ -s "$WORK/kd_amp_mgd.yaml" ] || return
    yolokd check "$WORK/kd_amp_mgd.yaml"
}

check_kd_off_last_epoch() {
    "$PYTHON" - "$WORK/runs/amp_mgd/results.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
kd = [k for k in rows[0] if k == "train/mgd_feat"]
assert kd, f"no train/mgd_feat column in {list(rows[0])}"
assert len(rows) == 2, f"expected 2 epochs, got {len(rows)}"
assert float(rows[0][kd[0]]) > 0, f"KD term 0 in epoch 1: {rows[0]}"
assert float(rows[-1][kd[0]]) == 0, f"KD term not 0 in the last epoch (off_last_epochs=1): {rows[-1]}"
print("KD on in epoch 1, off in epoch 2")
EOF
}

export_engine() { # export_engine CHECKPOINT PRECISION_FLAG FOLDER: a copy exported in FOLDER, its checks must pass
    local checkpoint=$1 precision=$2 folder=$WORK/$3
    mkdir -p "$folder" || return
    cp "$checkpoint" "$folder/best.pt" || return
    yolokd export "model=$folder/best.pt" format=engine "$precision" "imgsz=$IMGSZ" "data=$DATA" parity_images=16 ||
        return
    test -s "$folder/best.engine" && test -s "$folder/best.plan" && test -s "$folder/best.trt.json"
}

jetson_build() { # TensorRT 10: FP16 build; TensorRT 11: the FP16 refusal must be one line, then an FP32 build
    mkdir -p "$WORK/jetson" || return
    cp "$WORK/student_fp16/best.onnx" "$WORK/jetson/best.onnx" || return
    local build=("$PYTHON" "$REPO/deploy/jetson/run.py" build "$WORK/jetson/best.onnx" --imgsz "$IMGSZ" "$IMGSZ")
    if "$PYTHON" -c "import sys, tensorrt as t; sys.exit(not hasattr(t.BuilderFlag, 'FP16'))"; then
        "${build[@]}" --precision fp16
    else
        if "${build[@]}" --precision fp16 2>"$WORK/jetson/refusal.txt"; then
            echo "TensorRT without BuilderFlag.FP16 built an FP16 plan from an FP32 ONNX: expected a refusal" >&2
            return 1
        fi
        cat "$WORK/jetson/refusal.txt"
        test "$(wc -l <"$WORK/jetson/refusal.txt")" -eq 1 || return
        grep -q "^run.py: error: .*TensorRT 10" "$WORK/jetson/refusal.txt" || return
        "${build[@]}" --precision fp32
    fi
}

[ -n "${SKIP_INSTALL:-}" ] || step install install
step environment environment
step cuda_tests "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda -rs "$REPO/tests"
step data yolokd data "root=$WORK/data" num_train=256 num_val=64 "imgsz=$IMGSZ" seed=0 style=distinct
DATA=$(tail -n 1 "$WORK/logs/data.log")
step config write_config
step train yolokd train "$WORK/kd_amp_mgd.yaml"
BEST="$WORK/runs/amp_mgd/weights/best.pt"
step kd_off_last_epoch check_kd_off_last_epoch
step export_student_fp16 export_engine "$BEST" half=true student_fp16
step export_teacher_fp16 export_engine "$TEACHER" half=true teacher_fp16
step export_teacher_int8 export_engine "$TEACHER" int8=true teacher_int8
S="$WORK/student_fp16/best"
step benchmark yolokd benchmark \
    "model=$S.pt,$S.onnx,$S.engine,$S.plan,$WORK/teacher_fp16/best.engine,$WORK/teacher_int8/best.engine" \
    "imgsz=$IMGSZ" batch=1 precision=fp32,fp16 device=0 warmup=1 runs=100 seconds=2 "source=$DATA" \
    "project=$WORK/bench" name=gpu plot=false
step jetson_build jetson_build
step jetson_bench "$PYTHON" "$REPO/deploy/jetson/run.py" bench "$WORK/jetson/best.plan" \
    --images "$(dirname "$DATA")/images/val" --runs 100 --seconds 2 --warmup 1 --out "$WORK/jetson/report"
summary
