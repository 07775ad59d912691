"""The dead-letter admin API (the console's dead-letter view):

- ``GET /v1/dead-letters[?count=N]``: every known model version with its dead-letter
  count and its newest ``N`` entries (default 20, at most ``MAX_COUNT``), each with its
  error (``reason``), deliveries, the worker that gave up and when
  (``queue_view.DeadLetter.as_dict``): ``{"dead_letters": [{"model", "version",
  "count", "entries": […]}]}``.
- ``POST /v1/dead-letters/{model}/{version}/{id}/redrive``: moves dead letter ``id`` back
  to the version's request stream, atomically and with its original fields
  (``queue_view.redrive``); answers ``{"model", "version", "dead_letter", "stream",
  "entry"}`` (the new entry id). 404: unknown model or version, or no such dead letter;
  409: its body was cut when it was dead-lettered; 503: the queue is unreachable.

Who may call it: ``middleware/auth``. With ``AXON_ADMIN_KEYS`` set, a re-drive needs an
admin key (an API key is 403) and the list takes an API key or an admin key; without
admin keys both are guarded like every other route. Bodies are never shown (they are
the clients' data; ``body_bytes`` gives their size).
"""

from __future__ import annotations

import re
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from services.contract.queue_view import RedriveRefused
from services.gateway.errors import BadRequestError, NotFoundError
from services.gateway.responses import JSON, error_response
from services.gateway.routing import DirectRoute
from services.gateway.state import gateway, tag
from services.gateway.transport import queue_errors_as_503

PREFIX: Final = "/v1/dead-letters"
DEFAULT_COUNT: Final = 20
MAX_COUNT: Final = 100
ENTRY_ID: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
"""A stream entry id ``<ms>-<seq>``; anything else is no dead letter (404)."""


def _count(request: Request) -> int:
    raw = request.query_params.get("count", str(DEFAULT_COUNT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_COUNT:
        raise BadRequestError(f"count: must be an integer from 1 to {MAX_COUNT}, got {raw[:20]!r}")
    return int(raw)


async def list_dead_letters(request: Request) -> Response:
    tag(request, "dead_letters")
    state = gateway(request)
    count = _count(request)
    served = [mv for mvs in state.registry.models().values() for mv in mvs]
    versions = [(mv.name, mv.version) for mv in served]
    partitions = {(mv.name, mv.version): mv.partitions for mv in served}
    out = []
    async with queue_errors_as_503(state.transport.name):
        counts = await state.transport.queue_counts(versions, partitions)
        for (model, version), queued in zip(versions, counts, strict=True):
            entries = (
                await state.transport.dead_letters(
                    model, version, count, partitions[(model, version)]
                )
                if queued.dead_letters
                else []
            )
            out.append(
                {
                    "model": model,
                    "version": version,
                    "count": queued.dead_letters,
                    "entries": [entry.as_dict() for entry in entries],
                }
            )
    return JSON({"dead_letters": out})


async def redrive(request: Request) -> Response:
    tag(request, "redrive")
    state = gateway(request)
    params = request.path_params
    mv = state.registry.lookup(params["model"], params["version"])
    tag(request, "redrive", mv)
    dead_letter_id: str = params["id"]
    if not ENTRY_ID.fullmatch(dead_letter_id):
        raise NotFoundError(
            f"no dead letter {dead_letter_id[:40]!r}: ids look like 1700000000000-0"
        )
    async with queue_errors_as_503(state.transport.name):
        try:
            moved = await state.transport.redrive(
                mv.name, mv.version, dead_letter_id, mv.partitions
            )
        except RedriveRefused as exc:
            return error_response(409, str(exc))
    if moved is None:
        raise NotFoundError(
            f"model {mv.name!r} version {mv.version} has no dead letter {dead_letter_id} "
            f"(see GET {PREFIX})"
        )
    return JSON(
        {
            "model": mv.name,
            "version": mv.version,
            "dead_letter": dead_letter_id,
            "stream": moved.stream,
            "entry": moved.entry_id,
        }
    )


routes = [
    DirectRoute(PREFIX, list_dead_letters, methods=["GET"]),
    DirectRoute(PREFIX + "/{model}/{version}/{id}/redrive", redrive, methods=["POST"]),
]
