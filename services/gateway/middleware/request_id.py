"""The request id: the client's ``X-Request-ID`` when acceptable (``fields.request_id``),
else one made here; kept in ``scope["state"]`` with the request's clocks, echoed on the
response and logged once per request (``edge.Edge`` applies it)."""

from __future__ import annotations

import logging
import random
import time

from starlette.types import Scope

from services.gateway.fields import request_id

log = logging.getLogger("services.gateway.access")

HEADER = b"x-request-id"


def new_id() -> str:
    """32 random hex digits, as ``uuid4().hex``. From the process's own generator
    (seeded from the OS at start, reseeded in a forked child), not ``os.urandom``: a
    getrandom syscall per request was 2.6 % of the gateway's CPU (docs/decisions.md).
    An id names a request in logs and traces; it guards nothing."""
    return f"{random.getrandbits(128):032x}"


def assign(scope: Scope) -> str:
    """The request's id, stored with its clocks in ``scope["state"]``: ``request_id``,
    ``started`` (``perf_counter``, for durations) and ``arrived`` (``monotonic``: the
    request's deadline counts from here)."""
    given = None
    for key, value in scope["headers"]:
        if key == HEADER:
            given = request_id(value.decode("latin-1"))
            break
    rid = given or new_id()
    state = scope.setdefault("state", {})
    state["request_id"] = rid
    state["started"] = time.perf_counter()
    state["arrived"] = time.monotonic()
    return rid


def log_access(scope: Scope, status: int) -> None:
    """The request's access log line (INFO): method, path, status (0: no response was
    sent), duration and request id."""
    if log.isEnabledFor(logging.INFO):
        state = scope["state"]
        log.info(
            "%s %s %d %.1fms request_id=%s",
            scope["method"],
            scope["path"],
            status,
            (time.perf_counter() - state["started"]) * 1000,
            state["request_id"],
        )
