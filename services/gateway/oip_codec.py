"""The OIP v2 codec of the gateway, JSON and binary (pure, no I/O), both directions: an
inference request's JSON header and binary tensor data (``oip_binary``, the binary tensor
data extension) → numpy tensors checked against the model's metadata
(``services.contract.inputs``, the one validator), and reply tensors → OIP output tensors,
as JSON ``data`` or raw bytes. Every error names the field and why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.contract.codec import DATATYPES, Scalar
from services.contract.errors import InvalidInputError
from services.contract.inputs import check_request, check_shape
from services.contract.metadata import ModelMetadata
from services.gateway import oip_binary as binary
from services.gateway.errors import BadRequestError

Tensors = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True)
class InferRequest:
    """A parsed OIP infer request."""

    inputs: Tensors
    parameters: dict[str, Scalar] = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None
    id: str | None = None
    binary_outputs: frozenset[str] = frozenset()
    """Outputs to answer as raw bytes (``binary_data`` / ``binary_data_output``)."""


def parse_infer(
    doc: object,
    metadata: ModelMetadata,
    *,
    max_rows: int,
    binary_data: memoryview | bytes | None = None,
) -> InferRequest:
    """OIP v2 inference request → validated tensors for ``metadata``'s model.

    ``doc`` is the JSON (header); ``binary_data`` the bytes after it when the request
    had a positive ``Inference-Header-Content-Length`` (``oip_binary.split_body``),
    else None: then only inputs with ``binary_data_size`` 0 can be binary."""
    if not isinstance(doc, Mapping):
        raise BadRequestError("body: expected a JSON object with 'inputs'")
    request_id = doc.get("id")
    if request_id is not None and (not isinstance(request_id, str) or not request_id):
        raise BadRequestError("id: must be a non-empty string")
    parameters = parse_parameters(doc.get("parameters"), "parameters")
    # A transport setting, not the model's: workers never see it.
    all_binary = binary.flag(parameters, binary.BINARY_DATA_OUTPUT, "parameters", default=False)
    parameters.pop(binary.BINARY_DATA_OUTPUT, None)
    raw_inputs = doc.get("inputs", [])
    if not isinstance(raw_inputs, list):
        raise BadRequestError("inputs: must be a list of tensors")
    section = binary.BinarySection(binary_data or b"", framed=binary_data is not None)
    inputs: Tensors = {}
    for index, tensor in enumerate(raw_inputs):
        name, array = parse_tensor(tensor, f"inputs[{index}]", metadata, section)
        if name in inputs:
            raise BadRequestError(f"inputs[{index}].name: {name!r} appears twice")
        inputs[name] = array
    section.finish()
    outputs, binary_outputs = parse_output_selection(doc.get("outputs"), metadata, all_binary)
    check_request(metadata, inputs, parameters, max_rows=max_rows)
    return InferRequest(
        inputs=inputs,
        parameters=parameters,
        outputs=outputs,
        id=request_id,
        binary_outputs=binary_outputs,
    )


def parse_tensor(
    obj: object,
    where: str,
    metadata: ModelMetadata | None = None,
    section: binary.BinarySection | None = None,
) -> tuple[str, np.ndarray[Any, Any]]:
    """One OIP tensor ``{name, shape, datatype, data}`` (data nested or flat), or with
    ``parameters.binary_data_size`` instead of ``data``, its bytes from ``section``.

    With ``metadata``, a declared input's ``shape`` is checked against its spec (fixed
    axes, ``max_shape``) before any data is converted: an oversized tensor costs no
    array."""
    if not isinstance(obj, Mapping):
        raise BadRequestError(f"{where}: expected an object with name, shape, datatype, data")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError(f"{where}.name: required, a non-empty string")
    where = f"{where} ({name})"
    datatype = check_datatype(obj.get("datatype"), where)
    shape = check_tensor_shape(obj.get("shape"), name, where, metadata)
    data = obj.get("data")
    size = binary.input_binary_size(obj.get("parameters"), where, has_data=data is not None)
    if size is not None:
        binary.expected_size(datatype, shape, size, where)
        raw = (section or binary.BinarySection(b"", framed=False)).take(size, where)
        return name, binary.from_bytes(raw, datatype, shape, where)
    if not isinstance(data, list):
        raise BadRequestError(
            f"{where}.data: required, a (nested or flat) list of numbers (or "
            f"parameters.{binary.BINARY_DATA_SIZE} and the tensor's bytes after the JSON)"
        )
    array = to_array(data, datatype, where)
    if array.size != math.prod(shape):
        raise BadRequestError(
            f"{where}.data: {array.size} values, shape {shape} needs {math.prod(shape)}"
        )
    if array.ndim > 1 and list(array.shape) != shape:
        raise BadRequestError(f"{where}.data: nested as {list(array.shape)}, shape says {shape}")
    try:
        return name, array.reshape(shape)
    except (ValueError, OverflowError):  # e.g. [0, 2**62, 2**62]: no data, impossible shape
        raise BadRequestError(f"{where}.shape: {shape} is too large for an array") from None


def check_datatype(datatype: object, where: str) -> str:
    """A tensor's ``datatype``: one of ``DATATYPES`` (BYTES is refused: no Axon model
    takes strings)."""
    if datatype == "BYTES":
        raise BadRequestError(
            f"{where}.datatype: BYTES (string) tensors are not supported: Axon's models "
            f"take numbers ({', '.join(DATATYPES)})"
        )
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequestError(
            f"{where}.datatype: {datatype!r} is not one of {', '.join(DATATYPES)}"
        )
    return datatype


def check_tensor_shape(
    shape: object, name: str, where: str, metadata: ModelMetadata | None
) -> list[int]:
    """A tensor's ``shape``: at most 8 non-negative integers and, for an input
    ``metadata`` declares with the same rank, within its spec (``check_shape``): checked
    before any data is converted."""
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) > 8
    ):
        raise BadRequestError(f"{where}.shape: must be a list of at most 8 non-negative integers")
    spec = next((s for s in metadata.inputs if s.name == name), None) if metadata else None
    if spec is not None and len(shape) == len(spec.shape):
        try:
            check_shape(spec, shape)
        except InvalidInputError as exc:
            raise BadRequestError(f"{where}.shape: {exc}") from None
    return shape


def to_array(data: Sequence[Any], datatype: str, where: str) -> np.ndarray[Any, Any]:
    """JSON numbers → array of ``datatype``; refuses strings, ragged lists, lossy casts."""
    dtype = DATATYPES[datatype]
    wrong = _foreign_types(data, bool if dtype.kind == "b" else (int, float))
    if wrong:
        raise BadRequestError(
            f"{where}.data: {datatype} needs {_kind_name(dtype)} values, got {wrong} "
            "(send JSON numbers, not strings or true/false)"
            if dtype.kind != "b"
            else f"{where}.data: BOOL needs true/false values, got {wrong}"
        )
    try:
        if dtype.kind == "f":
            with np.errstate(over="ignore"):
                return np.asarray(data, dtype=np.float64).astype(dtype)
        array = np.asarray(data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequestError(f"{where}.data: not a rectangular list of numbers ({exc})") from None
    if array.dtype == object and all(isinstance(v, int) for v in array.ravel()):
        raise BadRequestError(f"{where}.data: values outside the {datatype} range")
    if array.size and array.dtype.kind not in ("b" if dtype.kind == "b" else "iub"):
        raise BadRequestError(f"{where}.data: {datatype} needs {_kind_name(dtype)} values")
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        # Compare as Python ints: numpy refuses e.g. bool/int64 against 2**64 - 1.
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise BadRequestError(f"{where}.data: values outside the {datatype} range")
    return array.astype(dtype)


def _kind_name(dtype: np.dtype[Any]) -> str:
    return {"b": "true/false", "f": "number"}.get(dtype.kind, "integer")


def _foreign_types(data: Sequence[Any], allowed: type | tuple[type, ...]) -> str:
    """Names of the leaf value types in (nested) ``data`` that are not ``allowed``
    ("" when all are). ``bool`` counts as foreign to numbers: JSON true is not 1.0.
    One C-level ``set(map(type, …))`` per innermost list keeps it cheap."""
    kinds: set[type] = set()
    level: list[Any] = [data]
    while level:
        nested: list[Any] = []
        for sequence in level:
            types = set(map(type, sequence))
            if list in types:
                nested.extend(v for v in sequence if type(v) is list)
                types.discard(list)
            kinds |= types
        level = nested
    allowed_types = allowed if isinstance(allowed, tuple) else (allowed,)
    foreign = sorted(k.__name__ for k in kinds if k not in allowed_types)
    return ", ".join(foreign)


def parse_parameters(obj: object, where: str) -> dict[str, Scalar]:
    """An OIP ``parameters`` object: string keys, scalar values."""
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise BadRequestError(f"{where}: must be an object of scalar values")
    for key, value in obj.items():
        if not isinstance(value, bool | int | float | str | type(None)):
            raise BadRequestError(f"{where}.{key}: must be a scalar (number, string, bool)")
    return dict(obj)


def parse_output_selection(
    obj: object, metadata: ModelMetadata, all_binary: bool = False
) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    """OIP ``outputs`` ([{name, parameters}, …]) → (names, each a declared output, None =
    all; the names to answer as raw bytes: ``binary_data``, else ``all_binary``, the
    request's ``binary_data_output``)."""
    declared = [spec.name for spec in metadata.outputs]
    if obj is None:
        return None, frozenset(declared if all_binary else ())
    if not isinstance(obj, list) or not obj:
        raise BadRequestError("outputs: must be a non-empty list of {name}")
    names, raw = [], set()
    for index, item in enumerate(obj):
        name = item.get("name") if isinstance(item, Mapping) else None
        if not isinstance(name, str) or name not in declared:
            raise BadRequestError(
                f"outputs[{index}].name: {name!r} is not an output of {metadata.name} "
                f"(outputs: {declared})"
            )
        assert isinstance(item, Mapping)
        where = f"outputs[{index}] ({name})"
        if binary.output_binary(item.get("parameters"), where, default=all_binary):
            raw.add(name)
        names.append(name)
    return tuple(names), frozenset(raw)


def outputs_json(
    outputs: Mapping[str, np.ndarray[Any, Any]],
    metadata: ModelMetadata,
    selection: Sequence[str] | None,
) -> list[dict[str, Any]]:
    """Reply tensors → OIP JSON output tensors (flat data), in declared order."""
    return encode_outputs(outputs, metadata, selection)[0]


def encode_outputs(
    outputs: Mapping[str, np.ndarray[Any, Any]],
    metadata: ModelMetadata,
    selection: Sequence[str] | None,
    binary_outputs: frozenset[str] = frozenset(),
) -> tuple[list[dict[str, Any]], list[np.ndarray[Any, Any]]]:
    """Reply tensors → (OIP output tensors in ``selection`` or declared order, the raw
    arrays to send after the JSON header in that order). An output in
    ``binary_outputs`` carries ``parameters.binary_data_size`` instead of ``data``."""
    names = selection or [spec.name for spec in metadata.outputs if spec.name in outputs]
    result, raw = [], []
    for name in names:
        array = outputs[name]
        datatype = next(s.datatype for s in metadata.outputs if s.name == name)
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype,
            "shape": [int(d) for d in array.shape],
        }
        if name in binary_outputs:
            raw.append(binary.raw_output(array, datatype))
            tensor["parameters"] = {binary.BINARY_DATA_SIZE: raw[-1].nbytes}
        else:
            tensor["data"] = array.ravel().tolist()
        result.append(tensor)
    return result, raw


def model_config(metadata: ModelMetadata, max_batch_size: int) -> dict[str, Any]:
    """Triton's model configuration of a model, as Triton's JSON (``GET
    /v2/models/{m}/config``, gRPC ``ModelConfig``): what perf_analyzer and other Triton
    tools read. When every tensor's first axis is the batch (-1), ``max_batch_size`` is
    the rows a request may carry (``AXON_MAX_ROWS``) and ``dims`` leave that axis out (a
    tensor with only the batch axis is ``dims [1]`` reshaped to ``[]``, as Triton writes
    it); else ``max_batch_size`` 0 and the full shapes. Variable axes are -1."""
    specs = (*metadata.inputs, *metadata.outputs)
    batched = max_batch_size > 0 and all(s.shape and s.shape[0] == -1 for s in specs)

    def tensor(spec: Any) -> dict[str, Any]:
        dims = list(spec.shape[1:] if batched else spec.shape)
        entry: dict[str, Any] = {"name": spec.name, "data_type": f"TYPE_{spec.datatype}",
                                 "dims": dims or [1]}  # fmt: skip
        if not dims:
            entry["reshape"] = {"shape": []}
        return entry

    return {
        "name": metadata.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [metadata.version]}},
        "max_batch_size": max_batch_size if batched else 0,
        "input": [tensor(spec) for spec in metadata.inputs],
        "output": [tensor(spec) for spec in metadata.outputs],
    }
