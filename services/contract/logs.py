"""Process logging: one JSON object per line (the default) or plain text
(``AXON_LOG_FORMAT=text``), at ``AXON_LOG_LEVEL`` (INFO by default).

A JSON line has ``time`` (RFC 3339, UTC, ms), ``level``, ``logger``, ``message``, and
when known ``request_id`` and ``trace_id`` / ``span_id``:

- ``request_id``: the record's own (``log.info(..., extra={"request_id": rid})``), else
  the request being handled (``REQUEST_ID``, set by the gateway for each HTTP request
  and gRPC call);
- ``trace_id`` / ``span_id``: the record's own, else the current span's (while tracing
  is on, the request's SERVER span is current in the gateway).

An exception's traceback goes into ``exception`` (one string), so a line stays a line.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from services.contract.errors import SettingsError
from services.contract.tracing import current_ids

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "axon_request_id", default=None
)
"""The id of the request the current task handles (None outside a request)."""

FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (see the module doc)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            doc["request_id"] = request_id
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            doc["trace_id"] = trace_id
            doc["span_id"] = getattr(record, "span_id", "")
        else:
            ids = current_ids()
            if ids is not None:
                doc["trace_id"], doc["span_id"] = ids
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


def _rfc3339(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def log_settings(env: Mapping[str, str]) -> tuple[str, str]:
    """(level, format) from ``AXON_LOG_LEVEL`` / ``AXON_LOG_FORMAT``; ``SettingsError``
    naming the variable for a bad value."""
    level = env.get("AXON_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in logging.getLevelNamesMapping():
        raise SettingsError(f"AXON_LOG_LEVEL={level!r}: must be DEBUG, INFO, WARNING or ERROR")
    fmt = env.get("AXON_LOG_FORMAT", "json").strip().lower() or "json"
    if fmt not in FORMATS:
        raise SettingsError(f"AXON_LOG_FORMAT={fmt!r}: must be json or text")
    return level, fmt


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of a ``log_settings`` format."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure(env: Mapping[str, str], logger: str = "") -> str:
    """Send ``logger``'s records (the root's by default) to stderr, one line each, in the
    format and at the level of ``env``; returns the level name. Replaces the handlers
    the logger had (a process configures its logging once, at start-up)."""
    level, fmt = log_settings(env)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    target = logging.getLogger(logger or None)
    for old in list(target.handlers):
        target.removeHandler(old)
    target.addHandler(handler)
    target.setLevel(level)
    if logger:
        target.propagate = False
    return level
