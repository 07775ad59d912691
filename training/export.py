"""ONNX export with a parity check: a model that ONNX Runtime does not reproduce is refused.

Facts this module is built on (torch 2.13): the dynamo exporter is right for
CNN/LSTM/GRU/generator graphs but silently wrong for `nn.RNN` (use the legacy
exporter there); a recurrent export can silently freeze a dynamic axis; dynamo writes
weights to a separate file unless told not to. Hence: every export is checked by
running ONNX Runtime at batch sizes and sequence lengths other than the example's and
comparing with PyTorch; nothing is written unless the check passes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from training.errors import ExportError

OPSET = 18
TOLERANCE = 1e-4

_NP_TO_OIP = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, OIP datatype, shape with -1 for dynamic axes."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.shape) if d == -1)


@dataclass(frozen=True)
class ExportResult:
    """The written file, its opset and the parity report stored in metadata.json."""

    path: Path
    opset: int
    parity: dict[str, Any]


def _axis_name(spec: TensorSpec, axis: int) -> str:
    return "batch" if axis == 0 else f"{spec.name}_dim{axis}"


def _torch_export(
    module: nn.Module,
    example: Sequence[torch.Tensor],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    path: Path,
    legacy: bool,
) -> None:
    names_in = [s.name for s in inputs]
    names_out = [s.name for s in outputs]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if legacy:
            axes = {s.name: {a: _axis_name(s, a) for a in s.dynamic_axes} for s in inputs}
            axes.update({s.name: {a: _axis_name(s, a) for a in s.dynamic_axes} for s in outputs})
            torch.onnx.export(
                module,
                tuple(example),
                str(path),
                dynamo=False,
                input_names=names_in,
                output_names=names_out,
                dynamic_axes=axes,
                opset_version=OPSET,
            )
        else:
            torch._dynamo.reset()
            dims: dict[str, dict[int, Any]] = {
                s.name: {a: torch.export.Dim.DYNAMIC for a in s.dynamic_axes} for s in inputs
            }
            program = torch.onnx.export(
                module,
                tuple(example),
                dynamo=True,
                input_names=names_in,
                output_names=names_out,
                dynamic_shapes=dims,
                opset_version=OPSET,
                external_data=False,
                verbose=False,
            )
            if program is None:
                raise ExportError("the dynamo exporter returned no program")
            program.save(str(path), external_data=False)


def _export_in_child(
    module: nn.Module,
    example: Sequence[torch.Tensor],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    path: Path,
    legacy: bool,
) -> None:
    """Run the exporter in a forked child so no exporter state survives in this process.

    Measured on torch 2.13: after one recurrent export, a later dynamo export of the same
    architecture in the same process traces the time axis as static and fails (or, worse,
    silently freezes it). A forked child inherits the trained module without pickling
    and takes the exporter's global state with it when it exits.
    """
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)

    def child() -> None:
        # A forked child must not enter an OpenMP parallel region: libgomp is not
        # fork-safe once the parent used its thread team (seen: the child asleep inside
        # RNN.forward for the whole 600 s timeout when the suite ran on a loaded
        # machine). One thread keeps every torch op inline; the models are tiny.
        torch.set_num_threads(1)
        try:
            _torch_export(module, example, inputs, outputs, path, legacy)
            writer.send("")
        except Exception as exc:  # the exporters raise many unrelated types
            text = str(exc).strip()
            first = text.splitlines()[0][:300] if text else ""
            writer.send(f"{type(exc).__name__}: {first}")

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    writer.close()
    try:
        message = reader.recv() if reader.poll(600) else "timed out after 600 s"
    except EOFError:
        message = "the exporter process died"
    proc.join(timeout=30)
    if message:
        raise ExportError(f"torch.onnx.export failed: {message}")


def _as_tuple(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def check_parity(
    module: nn.Module,
    path: Path,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    cases: Sequence[Mapping[str, torch.Tensor]],
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Run ONNX Runtime (CPU) and PyTorch on each case; raise `ExportError` on a mismatch.

    Returns ``{"max_abs_diff", "tolerance", "checks": [{"batch", "seq"?, "max_abs_diff"}]}``.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got_in = [i.name for i in session.get_inputs()]
    if got_in != [s.name for s in inputs]:
        raise ExportError(f"exported inputs {got_in} differ from {[s.name for s in inputs]}")
    checks: list[dict[str, Any]] = []
    worst = 0.0
    for case in cases:
        with torch.no_grad():
            expected = _as_tuple(module(*[case[s.name] for s in inputs]))
        feeds = {k: v.numpy() for k, v in case.items()}
        got = session.run([s.name for s in outputs], feeds)
        first = case[inputs[0].name]
        check: dict[str, Any] = {"batch": int(first.shape[0])}
        if first.dim() == 2 and -1 in inputs[0].shape[1:]:
            check["seq"] = int(first.shape[1])
        diff = 0.0
        for spec, exp, out in zip(outputs, expected, got, strict=True):
            if tuple(out.shape) != tuple(exp.shape):
                raise ExportError(
                    f"parity: output {spec.name!r} has shape {tuple(out.shape)} in ONNX Runtime "
                    f"but {tuple(exp.shape)} in PyTorch for input shape {tuple(first.shape)} "
                    "(a dynamic axis was frozen at export)"
                )
            diff = max(diff, float(np.max(np.abs(out - exp.numpy()))) if out.size else 0.0)
        check["max_abs_diff"] = diff
        checks.append(check)
        worst = max(worst, diff)
        if not diff <= tolerance:
            raise ExportError(
                f"parity: ONNX Runtime differs from PyTorch by {diff:.3g} (> {tolerance}) for "
                f"input shape {tuple(first.shape)}; the model was not written"
            )
    return {"max_abs_diff": worst, "tolerance": tolerance, "checks": checks}


def export_onnx(
    module: nn.Module,
    example: Mapping[str, torch.Tensor],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    path: Path,
    cases: Sequence[Mapping[str, torch.Tensor]],
    *,
    legacy: bool = False,
) -> ExportResult:
    """Export `module` to one self-contained ONNX file at `path`, checked for parity.

    `example` feeds the tracer (its batch and sequence sizes should differ from 1);
    `cases` are other input shapes used for the parity check. The file appears at
    `path` only if `onnx.checker` and the parity check pass.
    """
    module = module.eval().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmpdir:
        tmp = Path(tmpdir) / "model.onnx"
        _export_in_child(module, [example[s.name] for s in inputs], inputs, outputs, tmp, legacy)
        extra = [p.name for p in Path(tmpdir).iterdir() if p.name != "model.onnx"]
        if extra:
            raise ExportError(f"the export wrote external data files {extra}; expected one file")
        proto = onnx.load(str(tmp))
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"onnx.checker refused the exported model: {exc}") from exc
        parity = check_parity(module, tmp, inputs, outputs, cases)
        opset = max(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=OPSET
        )
        os.replace(tmp, path)
    return ExportResult(path=path, opset=opset, parity=parity)


def spec(name: str, array_dtype: Any, shape: Sequence[int]) -> TensorSpec:
    """Shorthand: ``spec("image", np.float32, [-1, 1, 8, 8])``."""
    return TensorSpec(name, _NP_TO_OIP[np.dtype(array_dtype)], tuple(shape))
