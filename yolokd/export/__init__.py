"""Deployment: export to ONNX / TensorRT with checks, latency benchmarks, and the pieces shared with deploy/jetson.

Modules (import them directly; this package imports nothing heavy):
    exporter    ``export_model``: Ultralytics' exporter + plan/sidecar + checks + report
    export_args ``YOLO.export`` arguments for the options, and for the plain export the graph is compared with
    engine_files  ``.plan`` + ``.trt.json`` of an engine built here; build recipe (+ calibration) for the device
    verify      runs the checks: parity on real images, mAP on data's val split, a plain export's graph
    profiles    ``ExportOptions`` and target profiles (``export/*.yaml``)
    checks      ONNX graph checks, numerical parity, mAP delta, graph signature (no KD residue)
    benchmark   ``run_benchmark``: per-stage latency of .pt / .onnx / .engine, sweeps, reports
    runners     one inference interface per runtime (torch, onnxruntime, TensorRT)
    images      real images and Ultralytics-style letterbox preprocessing
    stats       latency statistics + the benchmark report schema (numpy only; vendored by deploy/jetson)
    tegrastats  Jetson power rails (stdlib only; vendored by deploy/jetson)
    hardware    device names, Jetson power mode, known compute peaks (stdlib only; vendored by deploy/jetson)
    plan        TensorRT plan header / sidecar (stdlib only, tensorrt lazily; vendored by deploy/jetson)
    trt_compat  TensorRT 10 / 11 capabilities, precision plan, refusals that name the fix (stdlib only; vendored)
"""
