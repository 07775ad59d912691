"""The OIP gRPC codec (pure, no I/O): ``inference.ModelInferRequest`` → the same
validated ``InferRequest`` the REST codec (``oip_codec``) produces, and reply tensors →
``ModelInferResponse``; plus the other messages built from the gateway's views
(metadata, statistics, repository index).

Inputs come either all as typed ``contents`` (``fp32_contents``, ``int_contents``, …) or
all as ``raw_input_contents`` (one entry per input, in input order, little-endian,
row-major: read with ``numpy.frombuffer``, no copy). Outputs always go back as
``raw_output_contents``, as Triton answers. Errors are ``BadRequestError`` naming the
protobuf field and why (INVALID_ARGUMENT on the wire).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format

from services.contract.codec import DATATYPES, Scalar
from services.contract.inputs import check_request
from services.contract.metadata import ModelMetadata
from services.gateway import oip_binary as binary
from services.gateway.errors import BadRequestError
from services.gateway.oip_codec import (
    InferRequest,
    Tensors,
    check_datatype,
    check_tensor_shape,
    parse_output_selection,
)
from services.gateway.oip_pb import grpc_service_pb2 as pb

CONTENTS_FIELD: dict[str, tuple[str, np.dtype[Any]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
}
"""``InferTensorContents`` field per datatype and the dtype its values have (narrower
integers share the 32-bit fields; FP16 has none: send it raw)."""


def parameter_value(param: pb.InferParameter, where: str) -> Scalar:
    """One ``InferParameter`` (a oneof) → its Python value; an empty one is an error."""
    choice = param.WhichOneof("parameter_choice")
    if choice is None:
        raise BadRequestError(f"{where}: no value set (bool/int64/uint64/double/string_param)")
    value: Scalar = getattr(param, choice)
    return value


def parse_parameters(params: Mapping[str, pb.InferParameter], where: str) -> dict[str, Scalar]:
    """A protobuf ``parameters`` map → plain scalars."""
    return {key: parameter_value(value, f"{where}[{key!r}]") for key, value in params.items()}


def parse_model_infer(
    request: pb.ModelInferRequest, metadata: ModelMetadata, *, max_rows: int
) -> InferRequest:
    """A ``ModelInferRequest`` → validated tensors for ``metadata``'s model (the one
    validator, ``check_request``, as for REST)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequestError(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; send "
            "one per input, in input order (or typed contents for every input)"
        )
    inputs: Tensors = {}
    for index, tensor in enumerate(request.inputs):
        name, array = parse_input(tensor, f"inputs[{index}]", metadata, raw[index] if raw else None)
        if name in inputs:
            raise BadRequestError(f"inputs[{index}].name: {name!r} appears twice")
        inputs[name] = array
    parameters = parse_parameters(request.parameters, "parameters")
    outputs, _ = parse_output_selection(
        [
            {"name": out.name, "parameters": parse_parameters(out.parameters, "parameters")}
            for out in request.outputs
        ]
        or None,
        metadata,
    )
    check_request(metadata, inputs, parameters, max_rows=max_rows)
    return InferRequest(
        inputs=inputs, parameters=parameters, outputs=outputs, id=request.id or None
    )


def parse_input(
    tensor: pb.ModelInferRequest.InferInputTensor,
    where: str,
    metadata: ModelMetadata,
    raw: bytes | None,
) -> tuple[str, np.ndarray[Any, Any]]:
    """One ``InferInputTensor`` with its ``raw`` bytes (None: its typed ``contents``)."""
    name = tensor.name
    if not name:
        raise BadRequestError(f"{where}.name: required, a non-empty string")
    where = f"{where} ({name})"
    datatype = check_datatype(tensor.datatype, where)
    shape = check_tensor_shape(list(tensor.shape), name, where, metadata)
    for key in tensor.parameters:
        if key.startswith("shared_memory"):
            raise BadRequestError(
                f"{where}.parameters[{key!r}]: the shared memory extension is not "
                "supported; send the tensor in raw_input_contents or contents"
            )
    if raw is not None:
        if tensor.HasField("contents"):
            raise BadRequestError(
                f"{where}.contents: set, but the request uses raw_input_contents; send each "
                "input one way"
            )
        binary.expected_size(datatype, shape, len(raw), f"raw_input_contents for {where}")
        return name, binary.from_bytes(memoryview(raw), datatype, shape, where)
    typed = CONTENTS_FIELD.get(datatype)
    if typed is None:
        raise BadRequestError(
            f"{where}.contents: {datatype} has no typed contents field; send it in "
            "raw_input_contents"
        )
    field, container = typed
    values = getattr(tensor.contents, field)
    if len(values) != math.prod(shape):
        raise BadRequestError(
            f"{where}.contents.{field}: {len(values)} values, shape {shape} needs "
            f"{math.prod(shape)}"
        )
    dtype = DATATYPES[datatype]
    array = np.asarray(values, dtype=container)
    if dtype.itemsize < array.dtype.itemsize and array.size:
        info = np.iinfo(dtype)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise BadRequestError(f"{where}.contents.{field}: values outside the {datatype} range")
    return name, array.astype(dtype, copy=False).reshape(shape)


def infer_response(
    model: str,
    version: int,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray[Any, Any]],
    metadata: ModelMetadata,
    selection: Sequence[str] | None,
) -> pb.ModelInferResponse:
    """Reply tensors → a ``ModelInferResponse``: the outputs in ``selection`` (else
    declared) order, each as ``raw_output_contents``."""
    names = selection or [spec.name for spec in metadata.outputs if spec.name in outputs]
    response = pb.ModelInferResponse(
        model_name=model, model_version=str(version), id=request_id or ""
    )
    for name in names:
        datatype = next(s.datatype for s in metadata.outputs if s.name == name)
        array = binary.raw_output(outputs[name], datatype)
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response


def metadata_response(metadata: ModelMetadata, versions: Sequence[str]) -> pb.ModelMetadataResponse:
    """``ModelMetadataResponse``: the REST metadata's name, versions, platform and
    tensors (-1 for a variable axis)."""
    response = pb.ModelMetadataResponse(
        name=metadata.name, versions=list(versions), platform="onnxruntime_onnx"
    )
    for spec in metadata.inputs:
        response.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    for spec in metadata.outputs:
        response.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    return response


def statistics_response(entries: Sequence[Mapping[str, Any]]) -> pb.ModelStatisticsResponse:
    """The REST statistics entries (``Registry.stats``) as a ``ModelStatisticsResponse``;
    Axon's own ``axon`` block has no protobuf field and is left out."""
    response = pb.ModelStatisticsResponse()
    for entry in entries:
        json_format.ParseDict(
            {k: v for k, v in entry.items() if k != "axon"}, response.model_stats.add()
        )
    return response


def config_response(config: Mapping[str, Any]) -> pb.ModelConfigResponse:
    """``oip_codec.model_config``'s JSON as a ``ModelConfigResponse``."""
    response = pb.ModelConfigResponse()
    json_format.ParseDict(dict(config), response.config)
    return response
