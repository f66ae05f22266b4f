"""Help texts of the ``yolokd`` command line (kept apart so cli.py reads as the dispatch it is)."""

CONFIG_HELP = """\
Experiment config (YAML): any Ultralytics train argument plus three yolokd keys:
  model: yolov8n.yaml        # student, YAML or .pt (Ultralytics key)
  data: coco.yaml            # Ultralytics key, like epochs, imgsz, batch, seed, close_mosaic, project, name...
  teacher: yolov8s.pt        # trained checkpoint (.pt); required when distill is non-empty
  distill:                   # the methods: loss name + its parameters (see `yolokd methods`)
    - loss: bckd
      cls_weight: 1.0
      loc_weight: 4.0
  schedule:                  # optional KD weight schedule
    warmup_epochs: 0         # KD weight ramps linearly 0 -> 1 over this many epochs
    off_last_epochs: 0       # KD off for the last N epochs, or "close_mosaic" to follow close_mosaic
Unknown keys are errors with a "did you mean". Ultralytics' own distill_model/dis are not used: put the
checkpoint in teacher: and the methods in distill:. The configs shipped with yolokd are found by name from any
folder (bckd_yolov8n.yaml or cfg/bckd_yolov8n.yaml); a file at that path, if there is one, is used instead.
"""

OVERRIDES_HELP = """\
Overrides: key=value after the config, values read as YAML (3 is an int, false a bool, a/b a string):
  epochs=3 name=exp1            top-level keys
  distill.0.cls_weight=2        nested keys: a dotted path; numbers index lists
  distill.1.loss=bckd           an index equal to the list length appends an entry
  schedule.warmup_epochs=1
  --epochs 3  or  --epochs=3    same as epochs=3
"""

RESUME_HELP = """\
Resume:
  yolokd train resume=runs/detect/train/weights/last.pt   continue that run with the experiment saved beside it
  yolokd train CFG.yaml resume=True                        continue the newest last.pt under the current folder
"""

COMMAND_SUMMARIES = {
    "train": "train a student with a teacher and distillation losses",
    "qat": "fine-tune a trained student as INT8 fake-quant with its GT loss + the experiment's KD terms",
    "val": "validate a trained or exported model (Ultralytics val + COCO AP/AP50/AP75/AP_S/M/L)",
    "export": "export a student to ONNX / TensorRT, check it against PyTorch, write a report",
    "benchmark": "per-stage latency of .pt / .onnx / .engine models; batch and precision sweeps",
    "check": "validate an experiment config and print it resolved",
    "balance": "measure each KD term's value and gradient share next to the GT loss, before training",
    "tune": "search KD weights / method parameters (Ultralytics' Tuner or Ray Tune); writes the best experiment",
    "methods": "list the distillation methods, their parameters and defaults",
    "data": "write the synthetic detection set and print its data.yaml",
    "demo": "small end-to-end teacher -> student run on the synthetic set",
    "compare": "table and plots over finished runs: gain over a baseline, teacher gap closed, KD curves",
    "study": "baseline vs methods vs Ultralytics' native KD over seeds: mean +- std, gain vs seed noise",
}

TOP_HELP = f"""\
yolokd: train Ultralytics YOLO students with a frozen teacher and knowledge-distillation (KD) losses.

Usage:
  yolokd COMMAND [CFG.yaml] [key=value ...]
  yolokd COMMAND --help

Commands:
{chr(10).join(f"  {name:<11}{summary}" for name, summary in COMMAND_SUMMARIES.items())}

Examples:
  yolokd train cfg/bckd_yolov8n.yaml epochs=100 distill.0.cls_weight=2
  yolokd check cfg/bckd_yolov8n.yaml
  yolokd val model=runs/detect/train/weights/best.pt data=coco.yaml
  yolokd export model=runs/detect/train/weights/best.pt format=onnx data=coco.yaml
  yolokd benchmark model=best.pt,best.onnx imgsz=640 batch=1,8

{CONFIG_HELP}
{OVERRIDES_HELP}
{RESUME_HELP}
Errors in configs and inputs print one line (exit code 2); set YOLOKD_TRACEBACK=1 for the full traceback.
"""

EXPORT_HELP = """\
Usage: yolokd export model=best.pt [format=onnx|engine] [profile=export/NAME.yaml] [key=value ...]

Export with Ultralytics' exporter, then check the export (on by default) and write <stem>.export.{json,md}
next to it. Options (a profile sets any of them; key=value wins over the profile):
  format=onnx|engine   engine = TensorRT, built here for this GPU and TensorRT version; also writes <stem>.plan
                       (no Ultralytics header: trtexec, DeepStream, C++) and <stem>.trt.json (device sidecar)
  half=true | int8=true   FP16 / INT8; INT8 calibrates on the *train* split of data= (calib_split, fraction);
                       format=onnx int8: a Q/DQ ONNX (NVIDIA ModelOpt PTQ on calib_images=128 train images; a QAT
                       checkpoint exports its learned ranges, no data needed), layers kept in float in the report
  imgsz=640 batch=1 dynamic=false nms=None workspace=GiB simplify=true opset=N device=0
  data=data.yaml       parity images from its val split and the mAP delta of the export vs PyTorch
  target=tensorrt      with format=onnx: an FP32 ONNX for an engine built on the device (deploy/jetson), plus
                       <stem>.build.json and, with int8, <stem>.calib.npy (train-split calibration images)
  checks=false         skip the checks (graph, parity, mAP, same graph as a plain model)
Profiles: export/onnx-portable.yaml, export/jetson-orin-nano-fp16.yaml, export/jetson-orin-nano-int8.yaml
(profile=NAME finds export/NAME.yaml). See export/README.md.
Examples:
  yolokd export model=best.pt format=onnx data=data.yaml
  yolokd export model=best.pt --format engine --half true
  yolokd export model=best.pt profile=jetson-orin-nano-int8 format=onnx data=data.yaml
"""

BENCHMARK_HELP = """\
Usage: yolokd benchmark model=M[,M2...] [imgsz=640] [batch=1,8] [precision=fp32,fp16] [key=value ...]

Time preprocess, inference, postprocess (Ultralytics NMS) and end to end for .pt (torch), .onnx (onnxruntime)
and .engine/.plan (TensorRT), after a time-based warm-up, for at least runs= iterations and seconds= seconds.
Comma lists sweep: every model x precision (.pt only; exports keep theirs) x batch is one row.
  device=cpu|0  provider=auto|cpu|cuda|tensorrt (onnxruntime)  threads=N  warmup=2 runs=50 seconds=5
  source=DIR|data.yaml (real images; default Ultralytics' bundled photos)  project=runs/benchmark name=benchmark
Writes <project>/<name>/benchmark.{json,csv,md,png}: mean, std, min, p50/p90/p95/p99, max, throughput per stage,
CUDA-event GPU time, peak memory, environment, compute efficiency vs the device peak where known.
"""

QAT_HELP = f"""\
Usage: yolokd qat CFG.yaml model=path/to/best.pt [key=value ...]
       yolokd qat resume=path/to/last.pt

Quantization-aware training with distillation: fine-tune the trained float student (model=, a .pt) with INT8
fake-quant (NVIDIA ModelOpt through Ultralytics' quantize=8) on its GT loss plus CFG.yaml's KD terms against its
float teacher. Over the config it sets (key=value win): quantize=8 epochs=3 optimizer=AdamW lr0=1e-4
warmup_epochs=0 mosaic=0 close_mosaic=0, KD at full weight throughout (schedule.warmup_epochs=0,
schedule.off_last_epochs=0), name=<name>_qat. Needs pip install 'yolokd[int8]'. Then:
  yolokd export model=runs/detect/<name>_qat/weights/best.pt format=onnx data=data.yaml   (Q/DQ ONNX + checks)
See docs/int8.md.

{CONFIG_HELP}
{OVERRIDES_HELP}"""

COMMAND_HELP = {
    "train": f"Usage: yolokd train CFG.yaml [key=value ...]\n       yolokd train resume=path/to/last.pt\n\n"
    f"Train the student of CFG.yaml with its teacher and distill methods; prints the run directory.\n\n"
    f"{CONFIG_HELP}\n{OVERRIDES_HELP}\n{RESUME_HELP}",
    "qat": QAT_HELP,
    "val": "Usage: yolokd val model=best.pt data=data.yaml [key=value ...]\n\n"
    "Validate a trained model with Ultralytics (any val argument: imgsz, batch, conf, iou, split, device...)\n"
    "and print its metrics, plus COCO metrics by pycocotools (AP, AP50, AP75, AP_S, AP_M, AP_L; coco=false\n"
    "skips them) against the split's labels converted to COCO JSON once (cached as labels/<split>.coco.json).\n"
    "Writes <save_dir>/val_metrics.json. Exports validate too (model=best.onnx, model=best.engine): their input\n"
    "size and batch come from the export. Segment, pose and OBB models validate with their task's metrics (box\n"
    "and mask/pose mAP); the COCO box metrics are for detect models.\n",
    "export": EXPORT_HELP,
    "benchmark": BENCHMARK_HELP,
    "check": f"Usage: yolokd check CFG.yaml [key=value ...]\n\n"
    f"Validate an experiment config with its overrides and print the resolved experiment as YAML, every\n"
    f"method parameter spelled out (what `yolokd train` would run).\n\n{CONFIG_HELP}\n{OVERRIDES_HELP}",
    "balance": f"Usage: yolokd balance CFG.yaml [key=value ...]\n\n"
    f"Build the run of CFG.yaml (student, teacher, data, methods), then over its first balance.batches training\n"
    f"batches measure every KD term's value and the norm of its gradient on the student next to the GT loss's\n"
    f"(box, cls, dfl), and each method's scale under balance.weight_mode. No training step is taken. Prints the\n"
    f"table and writes kd_balance.json / kd_balance.md to the run folder: the table every KD run prints at start.\n\n"
    f"{CONFIG_HELP}",
    "tune": f"Usage: yolokd tune CFG.yaml [iterations=10] [space=SPACE] [methods=A,B,..] [name=tune] [use_ray=false]\n"
    f"       [key=value ...]\n\n"
    f"Search the KD settings of CFG.yaml: one distillation run per iteration, fitness = the student's val mAP50-95.\n"
    f"Ultralytics' Tuner mutates the values (its genetic search; records in tune_results.ndjson, plots\n"
    f"tune_scatter_plots.png / tune_fitness.png); use_ray=true runs Ray Tune instead (Ultralytics' run_ray_tune:\n"
    f'search_alg=optuna, ASHA with grace_period=10 epochs, gpu_per_trial=; needs pip install "yolokd[tune]").\n'
    f"Default space, from each method's Params: grad_share (auto balance) or the term weights (paper), the weights\n"
    f"of methods with several terms, temperatures, and fields with tune_bounds metadata. SPACE replaces it:\n"
    f"'{{distill.0.grad_share: [0.25, 4], distill.0.loc_weight: [1, 8], lr0: [0.001, 0.02]}}' or a YAML file of one.\n"
    f"methods=bckd,crosskd,pgd also searches which methods to use: one entry per candidate (the cfg's own entry\n"
    f"where it has one), each with a gate distill.<i>.enabled in [0, 1], on at >= 0.5 (the cfg's methods start on,\n"
    f"the others off); the tuned YAML keeps the methods the best trial used.\n"
    f"Writes <cfg>_tuned.yaml (the experiment with the best values; yolokd check accepts it) to the tune folder\n"
    f"under the experiment's project. Running it again with the same name= continues its records.\n\n"
    f"{CONFIG_HELP}",
    "methods": "Usage: yolokd methods\n\nList every distillation method (the `loss:` names of distill entries) with "
    "each parameter,\nits default and what it does.\n",
    "data": "Usage: yolokd data root=DIR [num_train=400 num_val=100 imgsz=128 seed=0 style=hard task=detect "
    "overwrite=false]\n\n"
    "Write the synthetic detection set under DIR (cached: nothing is rewritten for the same parameters) and\n"
    "print the path of its data.yaml. style=distinct draws the evidence benchmark's and the demo's scenes (four\n"
    "shapes, larger objects, less clutter), style=evidence the earlier eight-class benchmark's, instead of the\n"
    "hard default. task=segment writes polygon labels, task=obb rotated rectangles, task=pose 4 keypoints per object\n"
    "(the same images and objects).\n",
    "demo": "Usage: yolokd demo [key=value ...]\n\nA small end-to-end run on the synthetic set: the teacher shipped "
    "with yolokd, a baseline and a\nCrossKD student (about 6 minutes on 2 CPU cores); key=value are the keyword "
    "arguments of\nyolokd.demo.run_demo (method=bckd, teacher=yolov8s.yaml to train one, epochs=, images=...).\n",
    "compare": "Usage: yolokd compare RUN_DIR... [baseline=DIR] [teacher=DIR] [out=runs/compare]\n\n"
    "Final and best mAP of finished runs, gain over the baseline run and share of the teacher-student gap closed\n"
    "(final epoch), mAP50-95 vs epoch and every KD term per epoch: compare.{md,json} and two PNGs under out.\n",
    "study": "Usage: yolokd study [cfg=CFG.yaml] methods=bckd,mimic seeds=0,1,2 [epochs= images= imgsz= ...]\n\n"
    "Train the baseline, each method (bckd+pkd combines two) and Ultralytics' native distill_model with the same\n"
    "schedule for every seed; report mean +- std mAP, the seed-paired gain +- SE: better / WORSE / noise (2 SE).\n"
    "Synthetic set and a cached teacher by default (the demo's schedule); data= teacher= cfg= for your own.\n"
    "Other keys: out, val_images, batch, student, teacher_model, teacher_epochs, native=false, device,\n"
    "placebo=true (adds a KD row at a negligible weight: what running KD at all costs, README Results),\n"
    "jobs=2 (runs at a time, one process each: on 2 cores, one per core; results unchanged).\n"
    "Writes study.{md,json,png}; finished runs are cached, so an interrupted study continues.\n"
    "preset=evidence runs the README's evidence benchmark (baseline, bckd, crosskd, pgd, dfd, gdetkd, ld and\n"
    "Ultralytics' native KD; 3 seeds; 160 px synthetic scenes; teacher YOLOv8s 24 epochs, students 12 epochs).\n",
}
