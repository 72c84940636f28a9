//! BlazePose (detector + landmark model) run in-process with ONNX Runtime: image in, 33 landmarks out.
