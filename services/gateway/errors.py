"""Gateway domain errors and the ONE function that maps any error to an HTTP status.

Messages are written for the client: they say which field is wrong and what to change.
Nothing else (no traceback, no internal detail) reaches a client.
"""

from __future__ import annotations

from services.contract.errors import HTTP_STATUS, AxonError, ErrorCode


class GatewayError(Exception):
    """Base of the errors the gateway answers with; ``str(exc)`` is the client message."""


class BadRequestError(GatewayError):
    """Malformed body or a field with a bad value (400)."""


class UnauthorizedError(GatewayError):
    """Missing or unknown API key (401)."""


class NotFoundError(GatewayError):
    """Unknown model, version or route (404)."""


class RequestTimeoutError(GatewayError):
    """The body did not arrive within AXON_BODY_TIMEOUT_S of the headers (408)."""


class PayloadTooLargeError(GatewayError):
    """Body over AXON_MAX_BODY_BYTES, or images over AXON_MAX_IMAGE_PIXELS or
    AXON_MAX_REQUEST_PIXELS (413)."""


class BacklogFullError(GatewayError):
    """The model version's stream is over its backlog limit (429 + Retry-After)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(GatewayError):
    """No live worker serves the model version, or Redis is unreachable (503)."""


class DeadlineError(GatewayError):
    """The request's deadline passed before its reply came (504)."""


class WorkerReplyError(GatewayError):
    """A worker answered with an error; ``code`` is the reply's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_STATUS: dict[type[GatewayError], int] = {
    BadRequestError: 400,
    UnauthorizedError: 401,
    NotFoundError: 404,
    RequestTimeoutError: 408,
    PayloadTooLargeError: 413,
    BacklogFullError: 429,
    UnavailableError: 503,
    DeadlineError: 504,
}


def status_for(exc: BaseException) -> int:
    """HTTP status for ``exc``: gateway errors, worker reply codes, runtime errors; 500 else."""
    if isinstance(exc, WorkerReplyError):
        try:
            return HTTP_STATUS[ErrorCode(exc.code)]
        except ValueError:
            return 500
    if isinstance(exc, AxonError):
        return HTTP_STATUS.get(exc.code, 500)
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]  # type: ignore[index]
    return 500


def client_message(exc: BaseException) -> str:
    """What the client is told: our own message for known errors, a generic one else."""
    if isinstance(exc, GatewayError | AxonError):
        return str(exc)
    return "internal error (see the gateway log)"
