"""Every endpoint of the gateway as a ``Call``: the request to send and how to read its
answer, pure (no I/O). ``AxonClient`` and ``AsyncAxonClient`` only send calls, so the
two clients cannot drift apart.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar
from urllib.parse import quote

import numpy as np

from . import results
from .codec import HEADER_LENGTH, InferResult, ResponseFormatError, Scalar, decode_infer
from .codec import encode_infer as encode_infer_body
from .errors import http_error

T = TypeVar("T")


class Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


class Response(Protocol):
    """What the clients read of an HTTP response (httpx's, or any look-alike such as
    Starlette's TestClient's)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Headers: ...

    @property
    def content(self) -> bytes: ...


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reader of its answer. ``answers``: the statuses ``read``
    takes (others raise ``AxonHTTPError``); ``retry``: whether 429/503 are tried again
    (health and readiness report a 503 instead)."""

    method: Literal["GET", "POST"]
    path: str
    read: Callable[[Response], T]
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    answers: frozenset[int] = frozenset({200})
    retry: bool = True

    def result(self, response: Response) -> T:
        """The answer as ``T``; an error status → ``AxonHTTPError``."""
        if response.status_code not in self.answers:
            raise http_error(
                response.status_code,
                response.content,
                method=self.method,
                path=self.path,
                retry_after=response.headers.get("retry-after"),
                request_id=response.headers.get("x-request-id"),
            )
        return self.read(response)


def _json(response: Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ResponseFormatError(f"expected a JSON body ({exc})") from None


def _reader(what: str, build: Callable[[Mapping[str, Any]], T]) -> Callable[[Response], T]:
    return lambda response: results.parse(what, _json(response), build)


def _ok(response: Response) -> bool:
    return response.status_code == 200


def _model_path(model: str, version: str | int | None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return path if version is None else f"{path}/versions/{quote(str(version), safe='')}"


def _deadline(timeout_ms: int | None) -> dict[str, str]:
    return {} if timeout_ms is None else {"x-axon-timeout-ms": str(int(timeout_ms))}


# ------------------------------------------------------------------ OIP v2 (KServe)


def server_metadata() -> Call[results.ServerMetadata]:
    return Call("GET", "/v2", _reader("server metadata", results.ServerMetadata.from_json))


def server_live() -> Call[bool]:
    return Call("GET", "/v2/health/live", _ok, answers=frozenset({200, 503}), retry=False)


def server_ready() -> Call[bool]:
    return Call("GET", "/v2/health/ready", _ok, answers=frozenset({200, 503}), retry=False)


def model_metadata(model: str, version: str | int | None = None) -> Call[results.ModelMetadata]:
    read = _reader("model metadata", results.ModelMetadata.from_json)
    return Call("GET", _model_path(model, version), read)


def model_ready(model: str, version: str | int | None = None) -> Call[bool]:
    path = f"{_model_path(model, version)}/ready"
    return Call("GET", path, _ok, answers=frozenset({200, 503}), retry=False)


def _read_infer(response: Response) -> InferResult:
    return decode_infer(response.content, response.headers.get(HEADER_LENGTH))


def infer(
    model: str,
    inputs: Mapping[str, np.ndarray[Any, Any]],
    *,
    version: str | int | None = None,
    parameters: Mapping[str, Scalar] | None = None,
    outputs: Sequence[str] | None = None,
    binary: bool = True,
    timeout_ms: int | None = None,
    id: str | None = None,
) -> Call[InferResult]:
    merged = dict(parameters or {})
    if timeout_ms is not None:
        merged["timeout_ms"] = int(timeout_ms)
    body = encode_infer_body(inputs, binary=binary, id=id, parameters=merged, outputs=outputs)
    path = f"{_model_path(model, version)}/infer"
    return Call("POST", path, _read_infer, content=body.content, headers=body.headers)


def statistics(
    model: str | None = None, version: str | int | None = None
) -> Call[list[dict[str, Any]]]:
    if model is None and version is not None:
        raise ValueError("statistics: a version needs its model")
    path = "/v2/models/stats" if model is None else f"{_model_path(model, version)}/stats"
    return Call("GET", path, _reader("statistics", results.model_stats))


# ---------------------------------------------------------------- task endpoints


def models() -> Call[list[results.ModelSummary]]:
    return Call("GET", "/v1/models", _reader("model list", results.model_list))


def _task(
    model: str, task: str, doc: dict[str, Any], version: str | int | None, timeout_ms: int | None
) -> tuple[str, bytes, dict[str, str]]:
    if version is not None:
        doc["version"] = version
    content = json.dumps(doc, separators=(",", ":")).encode()
    headers = {"content-type": "application/json", **_deadline(timeout_ms)}
    return f"/v1/models/{quote(model, safe='')}/{task}", content, headers


def classify(
    model: str,
    images: np.ndarray[Any, Any] | None = None,
    *,
    pngs: Sequence[bytes] | None = None,
    top_k: int | None = None,
    version: str | int | None = None,
    timeout_ms: int | None = None,
) -> Call[results.ClassifyResult]:
    """``images``: pixel values [N, C, H, W] (or [N, H, W] for one channel) in the
    model's value range; or ``pngs``: PNG (or other image) files, any size."""
    if (images is None) == (pngs is None):
        raise ValueError("classify: give either images (an array) or pngs (image files)")
    doc: dict[str, Any] = {}
    if images is not None:
        doc["images"] = np.asarray(images, dtype=np.float64).tolist()
    else:
        doc["png"] = [base64.b64encode(bytes(p)).decode("ascii") for p in pngs or ()]
    if top_k is not None:
        doc["top_k"] = top_k
    path, content, headers = _task(model, "classify", doc, version, timeout_ms)
    read = _reader("classify", results.ClassifyResult.from_json)
    return Call("POST", path, read, content=content, headers=headers)


def forecast(
    model: str,
    history: np.ndarray[Any, Any] | Sequence[float] | Sequence[Sequence[float]],
    *,
    horizon: int | None = None,
    version: str | int | None = None,
    timeout_ms: int | None = None,
) -> Call[results.ForecastResult]:
    """``history``: one series (1-D) or several of one length (2-D, one per row)."""
    series = np.asarray(history, dtype=np.float64)
    if series.ndim not in (1, 2):
        raise ValueError(f"forecast: history of shape {series.shape}; 1-D or 2-D expected")
    doc: dict[str, Any] = {"history" if series.ndim == 1 else "histories": series.tolist()}
    if horizon is not None:
        doc["horizon"] = horizon
    path, content, headers = _task(model, "forecast", doc, version, timeout_ms)
    read = _reader("forecast", results.ForecastResult.from_json)
    return Call("POST", path, read, content=content, headers=headers)


def generate(
    model: str,
    *,
    count: int = 1,
    seed: int | None = None,
    label: int | None = None,
    format: Literal["png", "array"] = "png",
    version: str | int | None = None,
    timeout_ms: int | None = None,
) -> Call[results.GenerateResult]:
    doc: dict[str, Any] = {"count": count, "format": format}
    if seed is not None:
        doc["seed"] = seed
    if label is not None:
        doc["label"] = label
    path, content, headers = _task(model, "generate", doc, version, timeout_ms)
    read = _reader("generate", results.GenerateResult.from_json)
    return Call("POST", path, read, content=content, headers=headers)
