"""Domain exceptions of the serving runtime and the error codes carried in replies.

Every error that can reach a client through a reply has a stable ``code`` string. The
gateway maps codes to HTTP statuses in one place (see ``HTTP_STATUS``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class ErrorCode(StrEnum):
    """Codes carried in ``error.code`` of a reply."""

    INVALID_INPUT = "invalid_input"
    BAD_ENTRY = "bad_entry"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INFERENCE_FAILED = "inference_failed"
    DEAD_LETTER = "dead_letter"
    INTERNAL = "internal"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.BAD_ENTRY: 400,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.INFERENCE_FAILED: 500,
    ErrorCode.DEAD_LETTER: 500,
    ErrorCode.INTERNAL: 500,
}
"""HTTP status for each reply error code; the one mapping the gateway uses."""


class AxonError(Exception):
    """Base of every Axon runtime error; ``code`` is what a reply carries."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL


class SettingsError(AxonError):
    """An ``AXON_*`` setting is missing or has a bad value (raised at start-up)."""


class ModelRepositoryError(AxonError):
    """A model in the repository is missing, malformed or fails its sha256 check.

    The message always names the offending file or folder.
    """


class ModelLoadError(AxonError):
    """ONNX Runtime could not load a model file, or it does not match its metadata."""


class ProviderError(AxonError):
    """The requested execution provider is not usable on this machine."""


class InvalidInputError(AxonError):
    """A request's tensors or parameters do not match the model (client error)."""

    code = ErrorCode.INVALID_INPUT


class BadEntryError(AxonError):
    """A stream entry or message body cannot be decoded (client or gateway bug)."""

    code = ErrorCode.BAD_ENTRY


class InferenceError(AxonError):
    """ONNX Runtime failed on a request even when it was run on its own."""

    code = ErrorCode.INFERENCE_FAILED
