#!/usr/bin/env python3
"""Developer check of scripts/models/tflite2onnx.py: runs each .tflite model
with the LiteRT interpreter and the converted .onnx with ONNX Runtime on the
same random input and prints the largest output difference. Not needed by CI
(the manifest pins the converter's output bytes); run it after changing the
converter.

  python3 -m venv .venv/litert && .venv/litert/bin/pip install ai-edge-litert onnxruntime==1.22.1 numpy
  .venv/litert/bin/python scripts/models/verify_conversion.py .cache/pose-setup/tflite models

Measured 2026-11-23: detector max |diff| 4e-4 (outputs up to ~236), landmark
model 4e-3 on landmarks (up to ~155 px), 2e-4 on the heatmap.
"""

import sys

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter

tflite_dir, onnx_dir = sys.argv[1:3]
rng = np.random.default_rng(0)
worst = 0.0
for name, shape, lo in [("pose_detection", (1, 224, 224, 3), -1.0), ("pose_landmark_full", (1, 256, 256, 3), 0.0)]:
    x = rng.uniform(lo, 1.0, shape).astype(np.float32)
    it = Interpreter(model_path=f"{tflite_dir}/{name}.tflite")
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    ref = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
    sess = ort.InferenceSession(f"{onnx_dir}/{name}.onnx")
    for meta, got in zip(sess.get_outputs(), sess.run(None, {"input": x})):
        want = ref[meta.name]
        diff = float(np.abs(got - want).max())
        scale = float(np.abs(want).max())
        print(f"{name} {meta.name} {got.shape}: max |diff| {diff:.2e} (max |value| {scale:.1f})")
        worst = max(worst, diff / max(scale, 1.0))
sys.exit(0 if worst < 1e-3 else 1)
