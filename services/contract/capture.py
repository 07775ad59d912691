"""Captured traffic (``AXON_CAPTURE_FRACTION``): a sample of each model's synchronous
requests with their replies, in one capped stream per model, for ``axon replay``.

Key ``axon:cap:{model}`` (its own hash slot per model; a stream, ``XADD MAXLEN ~``
``AXON_CAPTURE_MAX_ENTRIES``, so the oldest go first). Bounded in time too,
``AXON_CAPTURE_MAX_AGE_S``: every append trims the entries older than that before its
newest capture (``XTRIM MINID``; entry ids are Redis' clock, ``at_ms`` the gateway's) and
sets the key to expire that long after it, so captures stop outliving the limit even once
capture is turned off. Fields of an entry:

- ``id``: the request id; ``version``: the version that answered; ``task``;
- ``body``: the request's stream entry body exactly as queued (``codec.encode_request``:
  inputs and parameters, a generator's seed included), so a replay sends the same bytes;
- ``reply``: the primary's reply (``codec.encode_reply``);
- ``latency_us``: the gateway's queue round trip for it (submission to reply, the
  ``axon_queue_wait_seconds`` span: no HTTP), ``at_ms``: when it was answered.

Never pickle: bodies and replies are the queue's own msgpack codec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.contract.protocol import PREFIX, RedisClient


def capture_key(model: str) -> str:
    """The capture stream of ``model`` (``axon:cap:{model}``)."""
    return f"{PREFIX}:cap:{{{model}}}"


@dataclass(frozen=True)
class Captured:
    """One captured request and its reply (see the module docstring)."""

    request_id: str
    version: int
    task: str
    body: bytes
    reply: bytes
    latency_us: int
    at_ms: int
    entry_id: str = ""
    """The stream entry's id (set when read back)."""

    def fields(self) -> dict[str, bytes | str | int]:
        return {"id": self.request_id, "version": self.version, "task": self.task,
                "body": self.body, "reply": self.reply, "latency_us": self.latency_us,
                "at_ms": self.at_ms}  # fmt: skip

    @classmethod
    def parse(cls, entry_id: str, fields: dict[bytes, bytes]) -> Captured:
        """An entry read back; ``ValueError`` for one that is not a capture."""
        try:
            return cls(
                fields[b"id"].decode(),
                int(fields[b"version"]),
                fields[b"task"].decode(),
                bytes(fields[b"body"]),
                bytes(fields[b"reply"]),
                int(fields[b"latency_us"]),
                int(fields[b"at_ms"]),
                entry_id,
            )
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"capture entry {entry_id}: {exc!r}") from None


async def append(
    redis: RedisClient, model: str, items: Sequence[Captured], *, maxlen: int, max_age_s: int
) -> None:
    """XADD each of ``items`` to ``model``'s capture stream, capped at about ``maxlen``
    entries; then drop the entries older than ``max_age_s`` before the newest item's
    ``at_ms`` and let the key expire ``max_age_s`` from now: one pipeline (one round
    trip, not a transaction)."""
    if not items:
        return
    key = capture_key(model)
    pipe = redis.pipeline(transaction=False)
    for item in items:
        pipe.xadd(key, item.fields(), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    cutoff_ms = max(item.at_ms for item in items) - max_age_s * 1000
    pipe.xtrim(key, minid=max(cutoff_ms, 0), approximate=False)
    pipe.expire(key, max_age_s)
    await pipe.execute()


async def read_newest(redis: RedisClient, model: str, count: int) -> list[Captured]:
    """The newest ``count`` captures of ``model``, oldest first; entries that do not
    parse are skipped."""
    raw = await redis.xrevrange(capture_key(model), count=count)
    found = []
    for entry_id, fields in reversed(raw):
        try:
            found.append(Captured.parse(_text(entry_id), dict(fields)))
        except ValueError:
            continue
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
