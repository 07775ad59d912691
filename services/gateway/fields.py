"""Request fields outside the tensors (pure, no I/O): the deadline, the client's request
id and integer fields of the task endpoints. Every error names the field and why."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.types import Scope

from services.contract.codec import Scalar
from services.gateway.errors import BadRequestError

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
"""Accepted client request ids (header ``X-Request-ID`` or OIP ``id``)."""

TIMEOUT_PARAMETER = "timeout_ms"
"""OIP request parameter that overrides the model's default deadline (ms from arrival)."""

TRITON_TIMEOUT_PARAMETER = "timeout"
"""Triton's request parameter (what ``tritonclient``'s ``infer(timeout=…)`` sends): the
deadline in microseconds; used when ``timeout_ms`` is absent."""

DEADLINE_PARAMETERS = frozenset({TIMEOUT_PARAMETER, TRITON_TIMEOUT_PARAMETER})
"""Parameters the gateway consumes (never passed on to the worker)."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case, as ASGI gives header names) in an
    HTTP scope, else None. Not Starlette's ``Headers.get``, which raises and catches a
    ``KeyError`` for each header a request lacks."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def int_parameter(
    parameters: Mapping[str, Any], name: str, low: int, high: int, *, default: int | None
) -> int:
    """An integer field in ``low..high``; ``default`` None = required."""
    value = parameters.get(name, default)
    if value is None:
        raise BadRequestError(f"{name}: required, an integer {low}..{high}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequestError(f"{name}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise BadRequestError(f"{name}: {value} is outside {low}..{high}")
    return value


def timeout_ms(
    header: str | None, parameters: Mapping[str, Scalar], *, default: int, maximum: int
) -> int:
    """The request's deadline in ms from arrival: OIP parameter ``timeout_ms``, else
    Triton's ``timeout`` (µs, rounded up to ms), else header, else default."""
    value: object = parameters.get(TIMEOUT_PARAMETER)
    where = f"parameters.{TIMEOUT_PARAMETER}"
    micros = parameters.get(TRITON_TIMEOUT_PARAMETER)
    if value is None and micros is not None:
        if isinstance(micros, bool) or not isinstance(micros, int) or micros < 1:
            raise BadRequestError(
                f"parameters.{TRITON_TIMEOUT_PARAMETER}: must be a positive integer "
                f"(microseconds, Triton's), got {micros!r}"
            )
        value, where = -(-micros // 1000), f"parameters.{TRITON_TIMEOUT_PARAMETER} (in ms)"
    if value is None and header is not None:
        where = "header X-Axon-Timeout-Ms"
        try:
            value = int(header)
        except ValueError:
            raise BadRequestError(f"{where}: must be an integer (ms), got {header!r}") from None
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise BadRequestError(f"{where}: must be an integer 1..{maximum} (ms), got {value!r}")
    return value


def request_id(header: str | None) -> str | None:
    """A client's X-Request-ID if acceptable (else None: the gateway makes one)."""
    if header is not None and REQUEST_ID.match(header):
        return header
    return None
