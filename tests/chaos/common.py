"""What the chaos scenarios share: the request, Redis inspection helpers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import redis

from services.contract import protocol
from tests.chaos.slow_model import NAME
from tests.e2e.payloads import infer_image

INFER = f"/v2/models/{NAME}/infer"
BODY: dict[str, Any] = infer_image(1)
STREAM = protocol.stream_key(NAME, 1)

if TYPE_CHECKING:
    Client = redis.Redis[bytes]
else:
    Client = redis.Redis


def backlog(client: Client) -> int:
    return int(client.xlen(STREAM))


def pending_total(client: Client) -> int:
    try:
        return int(client.xpending(STREAM, protocol.GROUP)["pending"])  # type: ignore[no-untyped-call]
    except redis.ResponseError:  # no group (Redis restarted empty)
        return 0


def pending_of(client: Client, consumer: str) -> list[str]:
    """Entry ids delivered to ``consumer`` and not acknowledged."""
    rows = client.xpending_range(
        STREAM, protocol.GROUP, min="-", max="+", count=10_000, consumername=consumer
    )
    return [row["message_id"].decode() for row in rows]


def request_ids(client: Client, entry_ids: list[str]) -> list[str]:
    """The client request ids (``X-Request-ID``) carried by stream entries."""
    found = []
    for entry_id in entry_ids:
        for _id, fields in client.xrange(STREAM, min=entry_id, max=entry_id):
            found.append(fields[b"id"].decode().split(":", 1)[1])
    return found


def worker_stats(client: Client, instance: str) -> dict[str, Any]:
    raw = client.get(protocol.worker_key(NAME, 1, instance))
    assert raw is not None, f"no heartbeat for {instance}"
    stats: dict[str, Any] = json.loads(raw)["stats"]
    return stats
