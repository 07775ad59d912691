"""Helpers shared by the test suites (real Redis servers, real ONNX files)."""
