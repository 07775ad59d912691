"""ONNX Runtime session factory.

Provider choice (``AXON_PROVIDER``):

- ``cpu``: CPUExecutionProvider only.
- ``cuda`` / ``tensorrt``: that provider must really be active in the created session
  (checked with ``session.get_providers()``), else ``ProviderError``.
- ``auto``: CUDA when onnxruntime offers it, an NVIDIA device is present, *and* the
  created session really uses it (onnxruntime-gpu on a machine without CUDA logs an
  error and silently falls back to CPU); otherwise CPU.

On CUDA/TensorRT every run goes through an IOBinding (inputs copied once, outputs bound
to host memory). ``warm_up`` runs one batch-of-one so the first request is not slow.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from services.contract.codec import DATATYPES
from services.contract.errors import ModelLoadError, ProviderError
from services.contract.metadata import ModelMetadata, TensorSpec
from services.runtime.repository import ModelFiles

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
}

_preload_lock = threading.Lock()
_preloaded = False


@dataclass(frozen=True)
class SessionOptions:
    """How to build a session: provider (auto|cpu|cuda|tensorrt) and thread counts."""

    provider: str = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    device_id: int = 0


class ModelSession:
    """A loaded ONNX model: ``run(feeds) -> outputs`` with numpy arrays.

    ``provider`` is the execution provider really in use. ``run`` is thread-safe.
    """

    def __init__(self, session: ort.InferenceSession, metadata: ModelMetadata) -> None:
        self._session = session
        self.metadata = metadata
        self.provider: str = session.get_providers()[0]
        self.output_names = [spec.name for spec in metadata.outputs]
        self._use_binding = self.provider in (CUDA, TENSORRT)

    def run(self, feeds: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """One ONNX Runtime run. ``feeds`` maps every input name to an array whose axis 0
        is the batch; every output comes back with the same axis-0 length."""
        if self._use_binding:
            binding = self._session.io_binding()
            for name, array in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(array))
            for name in self.output_names:
                binding.bind_output(name, "cpu")
            self._session.run_with_iobinding(binding)
            values = binding.copy_outputs_to_cpu()
        else:
            values = self._session.run(self.output_names, dict(feeds))
        return {
            name: np.asarray(value) for name, value in zip(self.output_names, values, strict=True)
        }

    def warm_up(self) -> None:
        """Run one batch-of-one of zeros (variable dims: the forecaster's window, else 1)."""
        self.run(example_inputs(self.metadata, rows=1))


def example_inputs(metadata: ModelMetadata, rows: int) -> dict[str, np.ndarray[Any, Any]]:
    """Zero inputs with ``rows`` rows; a variable non-batch axis gets ``window`` or 1."""
    window = metadata.window or 1
    feeds = {}
    for spec in metadata.inputs:
        shape = [rows] + [window if d == -1 else d for d in spec.shape[1:]]
        feeds[spec.name] = np.zeros(shape, dtype=DATATYPES[spec.datatype])
    return feeds


def create_session(files: ModelFiles, options: SessionOptions) -> ModelSession:
    """Build a session for a validated model version; logs the provider used.

    Raises ``ModelLoadError`` (naming the file) when ONNX Runtime cannot load it or its
    inputs/outputs differ from metadata.json, ``ProviderError`` when a required
    provider is not usable.
    """
    wanted = _provider_chain(options)
    if wanted[0] != CPU:
        _preload_gpu_libraries()
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.log_severity_level = 3
    provider_options: list[dict[str, Any]] = [
        {"device_id": str(options.device_id)} if p in (CUDA, TENSORRT) else {} for p in wanted
    ]
    try:
        session = ort.InferenceSession(
            files.onnx_bytes,
            sess_options=session_options,
            providers=wanted,
            provider_options=provider_options,
        )
    except Exception as exc:  # onnxruntime raises its own exception hierarchy
        raise ModelLoadError(f"{files.onnx_path}: ONNX Runtime cannot load it: {exc}") from None
    active = session.get_providers()
    if options.provider == "cuda" and active[0] != CUDA:
        raise ProviderError(f"AXON_PROVIDER=cuda but CUDA is not usable here (active: {active})")
    if options.provider == "tensorrt" and active[0] != TENSORRT:
        raise ProviderError(
            f"AXON_PROVIDER=tensorrt but TensorRT is not usable here (active: {active})"
        )
    if options.provider == "auto" and wanted[0] == CUDA and active[0] != CUDA:
        log.warning("CUDA provider offered but did not load; falling back to CPU")
    _check_signature(session, files)
    model = ModelSession(session, files.metadata)
    log.info(
        "loaded %s version %d with %s (asked %s)",
        files.metadata.name,
        files.metadata.version,
        model.provider,
        options.provider,
    )
    return model


def _provider_chain(options: SessionOptions) -> list[str]:
    available = ort.get_available_providers()
    if options.provider == "cpu":
        return [CPU]
    if options.provider == "cuda":
        _require(CUDA, available, "cuda")
        return [CUDA, CPU]
    if options.provider == "tensorrt":
        _require(TENSORRT, available, "tensorrt")
        return [TENSORRT, CUDA, CPU] if CUDA in available else [TENSORRT, CPU]
    return [CUDA, CPU] if CUDA in available and _cuda_device_present() else [CPU]


def _cuda_device_present() -> bool:
    """An NVIDIA device node or driver tool exists (skips a noisy failed CUDA load)."""
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def _require(provider: str, available: Sequence[str], setting: str) -> None:
    if provider not in available:
        raise ProviderError(
            f"AXON_PROVIDER={setting} but this onnxruntime build offers only {list(available)}"
        )


def _preload_gpu_libraries() -> None:
    """Let onnxruntime-gpu find CUDA/cuDNN shipped as pip packages (once per process)."""
    global _preloaded
    with _preload_lock:
        if _preloaded:
            return
        _preloaded = True
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            try:
                preload()
            except Exception as exc:  # best effort: the session check decides
                log.warning("onnxruntime.preload_dlls() failed: %s", exc)


def _check_signature(session: ort.InferenceSession, files: ModelFiles) -> None:
    """The ONNX graph's inputs/outputs must be the ones metadata.json declares."""
    where = f"{files.onnx_path} vs {files.directory / 'metadata.json'}"
    for kind, declared, actual in (
        ("inputs", files.metadata.inputs, session.get_inputs()),
        ("outputs", files.metadata.outputs, session.get_outputs()),
    ):
        graph = {node.name: node for node in actual}
        if set(graph) != {spec.name for spec in declared}:
            raise ModelLoadError(
                f"{where}: {kind} differ: graph has {sorted(graph)}, "
                f"metadata declares {sorted(spec.name for spec in declared)}"
            )
        for spec in declared:
            _check_tensor(where, spec, graph[spec.name].type, graph[spec.name].shape)


def _check_tensor(where: str, spec: TensorSpec, ort_type: str, ort_shape: Sequence[Any]) -> None:
    datatype = _ORT_TYPES.get(ort_type)
    if datatype != spec.datatype:
        raise ModelLoadError(
            f"{where}: {spec.name!r} is {ort_type} in the graph, metadata says {spec.datatype}"
        )
    if len(ort_shape) != len(spec.shape):
        raise ModelLoadError(
            f"{where}: {spec.name!r} has rank {len(ort_shape)} in the graph, "
            f"metadata shape is {list(spec.shape)}"
        )
    for axis, (graph_dim, declared) in enumerate(zip(ort_shape, spec.shape, strict=True)):
        if isinstance(graph_dim, int) and declared == -1 and graph_dim > 0:
            raise ModelLoadError(
                f"{where}: {spec.name!r} axis {axis} is fixed to {graph_dim} in the graph, "
                "metadata says it is variable (-1); re-export with a dynamic axis"
            )
        if isinstance(graph_dim, int) and declared != -1 and graph_dim != declared:
            raise ModelLoadError(
                f"{where}: {spec.name!r} axis {axis} is {graph_dim} in the graph, "
                f"metadata says {declared}"
            )
