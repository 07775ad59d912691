"""Networks of the three model families and their ONNX export wrappers."""
