"""INT8 for students: explicit quantization (Q/DQ ONNX) by NVIDIA ModelOpt, through Ultralytics' QAT helpers.

    backend      is ModelOpt installed (one-line refusal naming ``pip install 'yolokd[int8]'``); is a checkpoint QAT
    ptq          post-training quantization: calibrate a trained student on letterboxed train images
    layers       the layers kept in float and why; Q/DQ coverage of every convolution of an ONNX
    int8_export  ``yolokd export int8=true format=onnx``: refusals, the fake-quant model to export, report, checks
    qat          ``yolokd qat CFG.yaml model=best.pt``: the experiment's KD run, fine-tuning the fake-quant student

Why ModelOpt and not onnxruntime.quantization: docs/int8.md.
"""
