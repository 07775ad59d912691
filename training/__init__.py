"""Axon training: PyTorch pipelines that turn data into self-contained ONNX models.

`training/` never imports `services/`; it writes the model repository described in
`docs/model-repository.md`, which the services read.
"""
