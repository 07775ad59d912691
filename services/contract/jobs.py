"""The Redis protocol of async jobs (``Prefer: respond-async``): a second, lower-priority
stream per model version and a stored result per job, both in the version's hash slot.

Keys (``protocol.slot_tag``: ``{model:version}``, partition 0's slot; jobs are never
partitioned):

- ``axon:qj:{model:version}``: the job stream, consumer group ``workers``, entries with
  the fields of the request stream's (``protocol``: ``id``, ``reply``, ``deadline``,
  ``budget``, ``body``); ``reply`` is the entry's job key. The version's partition-0
  workers read it only for the room a batch has left after the request stream
  (``services.runtime.worker``); claims, dead letters and max deliveries apply as there.
- ``axon:qjb:{model:version}``: body bytes queued in the job stream (a counter).
- ``axon:job:{model:version}:{digest}``: a job (hash): ``meta`` (the gateway's opaque
  bytes: how to render the result), ``ttl`` (s), and once answered ``reply`` (the
  worker's reply, ``codec.encode_reply``). It lives ``ttl`` s from submission, then
  ``ttl`` s again from its answer. ``digest`` hashes the caller's credential and the
  job id (``services.gateway.jobs``), so a job is found only with the key it was
  submitted with.

Gateway side: ``enqueue_job`` (backlog check, the job hash and the XADD in one script),
``get_job``. Worker side: ``read_lanes`` (one XREADGROUP over the request and the job
stream), ``complete_jobs``, ``dead_letter_job``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from services.contract import protocol
from services.contract.codec import encode_reply
from services.contract.protocol import (
    GROUP,
    PREFIX,
    NewEntry,
    Outgoing,
    RedisClient,
    Refused,
    StreamEntry,
    slot_tag,
)

JOB_KEY_PREFIX = f"{PREFIX}:job:"


def job_stream_key(model: str, version: int) -> str:
    """The job stream of a model version (``axon:qj:{model:version}``)."""
    return f"{PREFIX}:qj:{slot_tag(model, version)}"


def job_bytes_key(model: str, version: int) -> str:
    """Counter of the body bytes queued in the job stream (``axon:qjb:{model:version}``)."""
    return f"{PREFIX}:qjb:{slot_tag(model, version)}"


def job_key(model: str, version: int, digest: str) -> str:
    """A job's hash (``axon:job:{model:version}:{digest}``), in the version's slot."""
    return f"{JOB_KEY_PREFIX}{slot_tag(model, version)}:{digest}"


def is_job_key(key: str, model: str | None = None, version: int | None = None) -> bool:
    """True for a job key (of ``model`` ``version`` when given): what a job stream
    entry's ``reply`` must be, and a request stream entry's must not."""
    if model is None or version is None:
        return key.startswith(JOB_KEY_PREFIX)
    return key.startswith(f"{JOB_KEY_PREFIX}{slot_tag(model, version)}:")


@dataclass(frozen=True)
class NewJob:
    """A job to queue with ``enqueue_job``: ``entry.reply_to`` is its ``key``."""

    key: str
    meta: bytes
    ttl_s: int
    entry: NewEntry


@dataclass(frozen=True)
class JobRecord:
    """A stored job: its ``meta`` and, once answered, the worker's ``reply`` (raw)."""

    meta: bytes
    reply: bytes | None


# KEYS: the job stream, its byte counter, the job's hash. ARGV: limit, maxlen, byte limit,
# TTL, meta, then the entry's id, deadline, budget, body. Refused (the backlog, >= 0; or
# -1 - queued bytes) as ``protocol._ENQUEUE_MANY``; else the hash is written and the
# entry added, so a job exists exactly when it is queued.
_ENQUEUE_JOB = """
local limit = tonumber(ARGV[1])
local byte_limit = tonumber(ARGV[3])
local length = redis.call('XLEN', KEYS[1])
local bytes = 0
if length > 0 then
  bytes = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), 0)
end
local size = string.len(ARGV[9])
if length >= limit then
  return length
end
if length > 0 and bytes + size > byte_limit then
  return -1 - bytes
end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'meta', ARGV[5], 'ttl', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
local fields = {'id', ARGV[6], 'reply', KEYS[3], 'deadline', ARGV[7], 'budget', ARGV[8],
  'body', ARGV[9]}
if ARGV[10] ~= '' then
  fields[#fields + 1] = 'traceparent'
  fields[#fields + 1] = ARGV[10]
  fields[#fields + 1] = 'tracestate'
  fields[#fields + 1] = ARGV[11]
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
redis.call('SET', KEYS[2], bytes + size)
return id
"""
_ENQUEUE_JOB_SHA = hashlib.sha1(_ENQUEUE_JOB.encode()).hexdigest()


async def enqueue_job(
    redis: RedisClient,
    model: str,
    version: int,
    job: NewJob,
    *,
    limit: int,
    maxlen: int,
    byte_limit: int,
) -> str | Refused:
    """Queue ``job`` on ``model`` ``version``'s job stream unless it holds ``limit``
    entries or its bodies with this one would pass ``byte_limit`` (a body alone over it
    only into an empty stream), and store its hash for ``job.ttl_s`` seconds: one
    script, atomic. Returns the stream entry id or ``Refused``."""
    entry = job.entry
    budget = "" if entry.budget_ms is None else str(int(entry.budget_ms))
    keys = (job_stream_key(model, version), job_bytes_key(model, version), job.key)
    args = (
        limit, maxlen, byte_limit, job.ttl_s, job.meta,
        entry.request_id, str(int(entry.deadline_ms)), budget, entry.body,
        entry.traceparent, entry.tracestate,
    )  # fmt: skip
    try:
        answer = await redis.evalsha(_ENQUEUE_JOB_SHA, 3, *keys, *args)  # type: ignore[no-untyped-call]
    except NoScriptError:
        answer = await redis.eval(_ENQUEUE_JOB, 3, *keys, *args)  # type: ignore[no-untyped-call]
    if isinstance(answer, int):
        return Refused(backlog=0, queued_bytes=-1 - answer) if answer < 0 else Refused(answer)
    return answer.decode() if isinstance(answer, bytes) else str(answer)


async def get_job(redis: RedisClient, key: str) -> JobRecord | None:
    """The job at ``key``; None when there is none (unknown or expired)."""
    meta, reply = await redis.hmget(key, ["meta", "reply"])
    if meta is None:
        return None
    return JobRecord(bytes(meta), None if reply is None else bytes(reply))


async def backlog(redis: RedisClient, model: str, version: int) -> int:
    """Entries in the job stream (queued plus read and not yet answered)."""
    return int(await redis.xlen(job_stream_key(model, version)))


# --------------------------------------------------------------------------- worker


async def read_lanes(
    redis: RedisClient,
    streams: Sequence[str],
    consumer: str,
    *,
    count: int,
    block_ms: int | None,
) -> dict[str, list[StreamEntry]]:
    """One XREADGROUP of up to ``count`` new entries from each of ``streams`` (of one
    slot: a model version's request and job streams), blocking up to ``block_ms`` until
    any has one (None: not at all). Entries by stream; a stream with none is absent."""
    command = protocol.read_command(streams, consumer, count=count, block_ms=block_ms)
    response = await redis.execute_command(*command, **protocol._on_node(redis, streams[0]))  # type: ignore[no-untyped-call]
    return protocol.read_answer(response)


# KEYS: the job stream, its byte counter, then each job key. ARGV per answer: the index of
# its key in KEYS, the reply, the entry id, the size of the entry's body. As
# ``protocol._COMPLETE``: an answer is stored only if its entry was still pending (XACK
# returned 1), so a retried call answers once; and only while its job still exists (a
# job that expired is not brought back), with the job's TTL from now.
_COMPLETE_JOBS = """
local stream = KEYS[1]
local acked = {}
local freed = 0
for i = 1, #ARGV, 4 do
  local id = ARGV[i + 2]
  if redis.call('XACK', stream, 'workers', id) == 1 then
    freed = freed + tonumber(ARGV[i + 3])
    local key = KEYS[tonumber(ARGV[i])]
    local ttl = redis.call('HGET', key, 'ttl')
    if ttl then
      redis.call('HSET', key, 'reply', ARGV[i + 1])
      redis.call('EXPIRE', key, ttl)
    end
    acked[#acked + 1] = id
  end
end
if #acked > 0 then
  redis.call('XDEL', stream, unpack(acked))
end
if freed > 0 and redis.call('DECRBY', KEYS[2], freed) < 0 then
  redis.call('SET', KEYS[2], 0)
end
return #acked
"""
_COMPLETE_JOBS_SHA = hashlib.sha1(_COMPLETE_JOBS.encode()).hexdigest()
_MAX_ANSWERS = 1000
"""Answers per script call (Lua's unpack has a C-stack limit)."""


async def complete_jobs(
    redis: RedisClient,
    model: str,
    version: int,
    answers: Sequence[tuple[Outgoing, str]],
    sizes: Sequence[int],
) -> int:
    """Answer job entries: per ``(reply, entry id)`` store the reply in its job (the
    reply's ``reply_to``, a job key) with the job's TTL, XACK and XDEL the entry: one
    script per 1,000 answers. Atomic per entry and idempotent as ``protocol.complete``.
    Returns how many entries were answered."""
    stream = job_stream_key(model, version)
    done = 0
    for start in range(0, len(answers), _MAX_ANSWERS):
        chunk = answers[start : start + _MAX_ANSWERS]
        keys: dict[str, int] = {}
        args: list[Any] = []
        for (outgoing, entry_id), size in zip(
            chunk, sizes[start : start + _MAX_ANSWERS], strict=True
        ):
            index = keys.setdefault(outgoing.reply_to, len(keys) + 3)
            args += [index, encode_reply(outgoing.reply), entry_id, size]
        call = [2 + len(keys), stream, job_bytes_key(model, version), *keys, *args]
        try:
            done += int(await redis.evalsha(_COMPLETE_JOBS_SHA, *call))  # type: ignore[no-untyped-call]
        except NoScriptError:
            done += int(await redis.eval(_COMPLETE_JOBS, *call))  # type: ignore[no-untyped-call]
    return done


# KEYS: a job key. ARGV: the reply. Stored (with the job's TTL from now) only while the
# job exists.
_STORE_REPLY = """
local ttl = redis.call('HGET', KEYS[1], 'ttl')
if ttl then
  redis.call('HSET', KEYS[1], 'reply', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ttl)
end
return 0
"""


async def dead_letter_job(
    redis: RedisClient,
    model: str,
    version: int,
    entry: StreamEntry,
    *,
    reason: str,
    consumer: str,
    reply: Outgoing | None,
    maxlen: int,
) -> None:
    """``protocol.dead_letter`` for a job stream entry: moved to the version's
    dead-letter stream (``stream`` names the job stream, so a redrive puts it back
    there), its job answered with ``reply`` when given, XACK and XDEL (one
    transaction)."""
    stream = job_stream_key(model, version)
    dead = protocol.dlq_key(model, version)
    fields = protocol.dead_letter_fields(entry, stream, reason=reason, consumer=consumer)
    body = entry.body or b""
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(dead, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    pipe.expire(dead, protocol.DLQ_TTL_S)
    if body:
        pipe.decrby(job_bytes_key(model, version), len(body))
    if reply is not None:
        pipe.eval(_STORE_REPLY, 1, reply.reply_to, encode_reply(reply.reply))
    pipe.xack(stream, GROUP, entry.entry_id)
    pipe.xdel(stream, entry.entry_id)
    await pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
