"""Operators' view of the queue (the gateway's console): each model version's backlog
and dead-letter count, the dead-letter entries, and re-driving one back to its stream.
Keys come from ``protocol`` (``stream_key``, ``dlq_key``, ``queued_bytes_key``); the
dead-letter entry format is the one ``protocol.dead_letter`` writes.

- ``queue_counts``: XLEN of the request stream and of the dead-letter stream of each
  model version, one pipeline (one round trip; on a cluster, one per node).
- ``dead_letters``: the newest entries of one version's dead-letter stream.
- ``redrive``: one script, atomic, every key in the model version's slot: the entry's
  original fields (those ``protocol.dead_letter`` did not add, in their order) are
  XADDed to the request stream, its body bytes added to the stream's queued-bytes
  counter, and the entry XDELed from the dead-letter stream. A new entry id means a new
  enqueue time, so an entry carrying ``budget`` gets its whole deadline budget again
  (an older entry with only an absolute ``deadline`` is likely answered as expired).
  Its reply goes where the original one did (``reply``): the caller that waited has
  long had its error, so nobody may read it; the list expires with its TTL. A job's
  entry (its ``reply`` a job key, ``services.contract.jobs``) goes back to the job
  stream instead, and its new answer replaces the job's stored error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import NoScriptError

from services.contract.jobs import job_bytes_key, job_stream_key
from services.contract.protocol import (
    FIELD_BODY,
    FIELD_ID,
    RedisClient,
    dlq_key,
    queued_bytes_key,
    stream_key,
)

DEAD_LETTER_FIELDS: Final = (
    "stream", "entry", "deliveries", "reason", "consumer", "at", "body_bytes", "body_truncated",
)  # fmt: skip
"""Fields ``protocol.dead_letter`` adds to an entry's own; a re-drive drops them."""


@dataclass(frozen=True)
class QueueCounts:
    """One model version's queue: entries waiting or in work, and dead letters."""

    backlog: int
    dead_letters: int


@dataclass(frozen=True)
class DeadLetter:
    """One dead-letter entry (``protocol.dead_letter``'s fields, decoded)."""

    dead_letter_id: str
    """Its id in the dead-letter stream (what ``redrive`` takes)."""
    entry_id: str
    """The id it had in the request stream."""
    request_id: str
    reason: str
    deliveries: int
    consumer: str
    at_ms: int
    body_bytes: int
    truncated: bool
    """The body was cut to ``protocol.DLQ_MAX_BODY_BYTES``: it cannot be re-driven."""

    @classmethod
    def from_fields(cls, dead_letter_id: str, fields: Mapping[bytes, bytes]) -> DeadLetter:
        """Decode one entry; a missing or unparsable field reads as empty or 0 (an entry
        written by hand or by another release still lists)."""

        def text(name: str) -> str:
            return fields.get(name.encode(), b"").decode("utf-8", "replace")

        def number(name: str) -> int:
            try:
                return int(text(name) or 0)
            except ValueError:
                return 0

        body = fields.get(FIELD_BODY, b"")
        return cls(
            dead_letter_id=dead_letter_id,
            entry_id=text("entry"),
            request_id=fields.get(FIELD_ID, b"").decode("utf-8", "replace"),
            reason=text("reason"),
            deliveries=number("deliveries"),
            consumer=text("consumer"),
            at_ms=number("at"),
            body_bytes=number("body_bytes") if b"body_bytes" in fields else len(body),
            truncated=text("body_truncated") == "1",
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.dead_letter_id,
            "entry": self.entry_id,
            "request_id": self.request_id,
            "reason": self.reason,
            "deliveries": self.deliveries,
            "consumer": self.consumer,
            "at_ms": self.at_ms,
            "body_bytes": self.body_bytes,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class Redriven:
    """``redrive``'s answer: the dead letter is back in ``stream`` as ``entry_id``."""

    stream: str
    entry_id: str


class RedriveRefused(Exception):
    """The dead letter cannot be re-driven; ``str(exc)`` says why."""


async def queue_counts(
    redis: RedisClient,
    versions: Sequence[tuple[str, int]],
    partitions: Mapping[tuple[str, int], int] | None = None,
) -> list[QueueCounts]:
    """Backlog and dead letters of each (model, version), in order, summed over its
    stream partitions (``partitions``, 1 when absent); one pipeline."""
    if not versions:
        return []
    counts = [(partitions or {}).get(key, 1) for key in versions]
    pipe = redis.pipeline(transaction=False)
    for (model, version), count in zip(versions, counts, strict=True):
        for partition in range(count):
            pipe.xlen(stream_key(model, version, partition))
            pipe.xlen(dlq_key(model, version, partition))
    lengths = iter(int(n) for n in await pipe.execute())
    answers = []
    for count in counts:
        pairs = [(next(lengths), next(lengths)) for _ in range(count)]
        answers.append(QueueCounts(sum(q for q, _ in pairs), sum(d for _, d in pairs)))
    return answers


async def dead_letters(
    redis: RedisClient, model: str, version: int, *, count: int, partitions: int = 1
) -> list[DeadLetter]:
    """Up to ``count`` dead letters of ``model`` ``version`` (all its stream partitions),
    newest first."""
    found = []
    for partition in range(partitions):
        rows = await redis.xrevrange(dlq_key(model, version, partition), "+", "-", count=count)
        found += [DeadLetter.from_fields(_text(i), dict(fields)) for i, fields in rows]
    found.sort(key=lambda d: _id_order(d.dead_letter_id), reverse=True)
    return found[:count]


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# KEYS: the dead-letter stream, the request stream, its queued-bytes counter. ARGV: the
# dead letter's id, then the names of the fields to drop (no MAXLEN: the stream's
# limits were applied when the entry was first queued; a re-drive adds one by hand).
# Answers the new entry id; 0 for no such dead letter; 1 for a truncated body.
_REDRIVE = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return 0
end
local drop = {}
for i = 2, #ARGV do
  drop[ARGV[i]] = true
end
local fields = found[1][2]
local keep = {}
local size = 0
local job = false
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == 'body_truncated' and fields[i + 1] == '1' then
    return 1
  end
  if not drop[name] then
    keep[#keep + 1] = name
    keep[#keep + 1] = fields[i + 1]
    if name == 'body' then
      size = string.len(fields[i + 1])
    elseif name == 'reply' and string.sub(fields[i + 1], 1, 9) == 'axon:job:' then
      job = true
    end
  end
end
local stream, counter = KEYS[2], KEYS[3]
if job then
  stream, counter = KEYS[4], KEYS[5]
end
local id = redis.call('XADD', stream, '*', unpack(keep))
if size > 0 then
  redis.call('INCRBY', counter, size)
end
redis.call('XDEL', KEYS[1], ARGV[1])
if job then
  return {id}
end
return id
"""
_REDRIVE_SHA = hashlib.sha1(_REDRIVE.encode()).hexdigest()


async def redrive(
    redis: RedisClient, model: str, version: int, dead_letter_id: str, *, partitions: int = 1
) -> Redriven | None:
    """Move dead letter ``dead_letter_id`` of ``model`` ``version`` back to the request
    stream of the partition it came from (the module docstring); None when no partition
    has such a dead letter. Raises ``RedriveRefused`` for an entry whose body was
    truncated."""
    for partition in range(partitions):
        stream = stream_key(model, version, partition)
        keys: tuple[str, ...] = (
            dlq_key(model, version, partition), stream, queued_bytes_key(stream),
        )  # fmt: skip
        # A job's dead letter (its reply is a job key) goes back to the job stream; only
        # partition 0's slot holds jobs (elsewhere the job keys would be CROSSSLOT).
        keys += (
            (job_stream_key(model, version), job_bytes_key(model, version))
            if partition == 0
            else keys[1:]
        )
        args = (dead_letter_id, *DEAD_LETTER_FIELDS)
        try:
            answer = await redis.evalsha(_REDRIVE_SHA, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except NoScriptError:  # first use on this server (or it restarted): load it
            answer = await redis.eval(_REDRIVE, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        if answer != 0:
            break
    if answer == 0:
        return None
    if answer == 1:
        raise RedriveRefused(
            f"dead letter {dead_letter_id}: its body was cut to fit the dead-letter stream; "
            "it cannot be re-driven (send the request again)"
        )
    if isinstance(answer, list):  # a job's entry, back on the job stream
        return Redriven(job_stream_key(model, version), _text(answer[0]))
    return Redriven(stream, _text(answer))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
