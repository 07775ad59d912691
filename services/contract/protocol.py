"""The Redis protocol between the gateway and the model workers (DESIGN.md).

Keys. Everything one script, transaction or blocking pop touches shares a hash slot: the
keys of a model version carry the hash tag ``{model:version}``, so on Redis Cluster a
model version lives on one node and no command is CROSSSLOT (``slot_tag``).

- ``axon:q:{model:version}``: request stream, consumer group ``workers``. Entry fields
  ``id`` (request id), ``reply`` (reply list key), ``deadline`` (unix ms on the gateway's
  clock, ``0`` = none), ``budget`` (ms of the deadline left when the gateway queued it;
  absent from older gateways), ``body`` (msgpack request, see ``codec``), and, when the
  request is traced, ``traceparent`` / ``tracestate`` (W3C Trace Context of the
  gateway's enqueue span; ``services.contract.tracing``). The entry id's
  millisecond part is the enqueue time (Redis clock), so ``entry time + budget`` is the
  deadline on Redis' clock: workers compare it with Redis ``TIME`` of the node holding
  the stream (their offset to it is measured at each heartbeat), so no two hosts' wall
  clocks are ever compared.
- ``axon:qb:{model:version}``: body bytes queued in the stream (a counter).
- ``axon:r:{model:version}:{gateway_instance}``: a gateway process's reply list for that
  model version; workers RPUSH msgpack replies and set a TTL. A gateway listens on one
  list per model version it has sent work to (one blocking pop each).
- ``axon:dlq:{model:version}``: dead-letter stream; the original fields plus ``stream``,
  ``entry``, ``deliveries``, ``reason``, ``consumer``, ``at`` (unix ms).
- ``axon:w:{model:version}:{instance}``: worker heartbeat (JSON, expires after the
  heartbeat TTL) with the model's metadata and the worker's counters.
- Partitions (``AXON_PARTITIONS`` = K on the workers): a hot model version's queue split
  into K streams; partition 0 is the keys above, partition p ≥ 1 the same keys with the
  tag ``{model:version:p}`` (its own slot, so a cluster spreads them over its nodes).
  Heartbeats stay under ``{model:version}``.
- Async jobs (``services.contract.jobs``): ``axon:qj:{model:version}`` (a second,
  lower-priority request stream), ``axon:qjb:{model:version}`` (its byte counter) and
  ``axon:job:{model:version}:{digest}`` (a job and its stored reply), in the version's
  slot.
- ``axon:idem:{digest}``: an ``Idempotency-Key``'s record (msgpack: pending, or the
  stored response), with a TTL (``AXON_IDEMPOTENCY_TTL_S``).
- ``axon:route:{model}``: the model's routing rule (JSON ``{"weights": {"1": 90, "2":
  10}, "sticky_header": null}``, no TTL; ``services.gateway.routing_rules`` validates it
  on write and on read). Every gateway reads it with its registry refresh.

Every function takes a ``redis.asyncio.Redis`` or a ``redis.asyncio.RedisCluster``
client (``redis_client.connect``); reads over several model versions (heartbeats,
routing rules) use the cluster client's per-slot MGET.

Gateway side: ``enqueue_many`` (the requests of one event-loop tick: backlog check and
XADD in one server-side script, one round trip), ``backlog``, ``live_workers``,
``pop_replies``, ``read_rules`` / ``write_rule`` / ``delete_rule``.
Worker side: ``ensure_group``, ``read_entries``, ``claim_stale``, ``complete``,
``dead_letter``, ``publish_heartbeat``, ``deregister``, ``server_time``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from services.contract.codec import Reply, encode_reply

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from services.contract.fast_redis import FastRedis

    RedisClient = Redis[bytes]
else:
    RedisClient = Any

GROUP = "workers"
PREFIX = "axon"
FIELD_ID = b"id"
FIELD_REPLY = b"reply"
FIELD_DEADLINE = b"deadline"
FIELD_BODY = b"body"
FIELD_BUDGET = b"budget"
FIELD_TRACEPARENT = b"traceparent"
FIELD_TRACESTATE = b"tracestate"


DLQ_MAX_BODY_BYTES = 64 * 1024
"""Longest request body a dead-letter entry keeps (the rest is cut; ``body_bytes``)."""

DLQ_TTL_S = 7 * 24 * 3600
"""A dead-letter stream expires this long after its last entry was added."""


def slot_tag(model: str, version: int, partition: int = 0) -> str:
    """The hash tag every key of one model version's queue carries: ``{model:version}``,
    and ``{model:version:partition}`` for its further partitions (``AXON_PARTITIONS``).
    Redis Cluster hashes only the text inside the first braces, so a partition's keys
    share a slot, and the partitions of a model spread over the cluster's nodes."""
    if partition:
        return f"{{{model}:{version}:{partition}}}"
    return f"{{{model}:{version}}}"


def stream_key(model: str, version: int, partition: int = 0) -> str:
    """Request stream of one model version (``axon:q:{model:version}``), or of one of its
    further partitions (``axon:q:{model:version:partition}``)."""
    return f"{PREFIX}:q:{slot_tag(model, version, partition)}"


class QueueName(NamedTuple):
    """What a stream key names."""

    model: str
    version: int
    partition: int = 0


def parse_stream_key(stream: str) -> QueueName:
    """The model, version and partition of a stream key (``stream_key``);
    ``ValueError`` for anything else."""
    prefix = f"{PREFIX}:q:{{"
    inner = stream.removeprefix(prefix).removesuffix("}")
    parts = inner.split(":")
    if (
        not stream.startswith(prefix)
        or not stream.endswith("}")
        or len(parts) not in (2, 3)
        or not parts[0]
        or not all(p.isdigit() for p in parts[1:])
        or (len(parts) == 3 and int(parts[2]) == 0)
    ):
        raise ValueError(f"not a request stream key: {stream!r}")
    return QueueName(parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else 0)


def queued_bytes_key(stream: str) -> str:
    """Counter of the body bytes queued in ``stream`` (``axon:qb:{model:version}``):
    added by the enqueue script, subtracted when an entry is answered or dead-lettered,
    reset whenever the stream is found empty (so drift cannot accumulate)."""
    return stream.replace(f"{PREFIX}:q:", f"{PREFIX}:qb:", 1)


def reply_key(gateway_instance: str, model: str, version: int, partition: int = 0) -> str:
    """Reply list of one gateway process for the replies to one stream's entries (in the
    stream's slot, so the completion script may push to it)."""
    return f"{PREFIX}:r:{slot_tag(model, version, partition)}:{gateway_instance}"


def dlq_key(model: str, version: int, partition: int = 0) -> str:
    """Dead-letter stream of one model version (of one partition's entries)."""
    return f"{PREFIX}:dlq:{slot_tag(model, version, partition)}"


def worker_key(model: str, version: int, instance: str) -> str:
    """Heartbeat key of one worker instance serving one model version."""
    return f"{PREFIX}:w:{slot_tag(model, version)}:{instance}"


def worker_pattern(model: str | None = None, version: int | None = None) -> str:
    """SCAN pattern of the heartbeat keys of every worker, of one model, or of one model
    version (model names hold no glob characters: ``metadata`` validates them)."""
    if model is None:
        return f"{PREFIX}:w:*"
    return f"{PREFIX}:w:{{{model}:{'*' if version is None else version}}}:*"


def idempotency_key(digest: str) -> str:
    """An ``Idempotency-Key``'s record (``services.gateway.idempotency``): one key, any
    slot; ``digest`` hashes the caller's credential and the key."""
    return f"{PREFIX}:idem:{digest}"


def routing_key(model: str) -> str:
    """Routing rule of a model (all its versions), JSON."""
    return f"{PREFIX}:route:{model}"


def entry_time_ms(entry_id: str) -> int:
    """Enqueue time (Redis clock, unix ms) encoded in a stream entry id ``<ms>-<seq>``."""
    return int(entry_id.split("-", 1)[0])


@dataclass(frozen=True)
class StreamEntry:
    """One raw stream entry as read from Redis; ``deliveries`` is known after a claim."""

    entry_id: str
    fields: Mapping[bytes, bytes]
    deliveries: int = 1

    @property
    def request_id(self) -> str | None:
        value = self.fields.get(FIELD_ID)
        return value.decode("utf-8", "replace") if value is not None else None

    @property
    def reply_to(self) -> str | None:
        value = self.fields.get(FIELD_REPLY)
        return value.decode("utf-8", "replace") if value is not None else None

    @property
    def deadline_ms(self) -> int | None:
        """The deadline in unix ms on Redis' clock: entry time + ``budget``; for an entry
        without a budget (older gateway) its ``deadline`` field. None when absent, zero
        or unparsable (no deadline)."""
        budget = self.fields.get(FIELD_BUDGET)
        if budget is not None:
            try:
                return entry_time_ms(self.entry_id) + max(int(budget), 0)
            except ValueError:
                pass
        value = self.fields.get(FIELD_DEADLINE)
        try:
            deadline = int(value) if value is not None else 0
        except ValueError:
            return None
        return deadline if deadline > 0 else None

    @property
    def body(self) -> bytes | None:
        return self.fields.get(FIELD_BODY)

    @property
    def trace_carrier(self) -> dict[str, str] | None:
        """The W3C Trace Context the gateway queued with the request (``traceparent``
        and, when given, ``tracestate``); None for an untraced request."""
        parent = self.fields.get(FIELD_TRACEPARENT)
        if not parent:
            return None
        carrier = {"traceparent": parent.decode("latin-1")}
        state = self.fields.get(FIELD_TRACESTATE)
        if state:
            carrier["tracestate"] = state.decode("latin-1")
        return carrier


@dataclass(frozen=True)
class Outgoing:
    """A reply to deliver: ``reply_to`` is the list key, ``reply`` the message."""

    reply_to: str
    reply: Reply


# --------------------------------------------------------------------------- gateway


@dataclass(frozen=True)
class NewEntry:
    """A request to queue with ``enqueue_many``."""

    request_id: str
    reply_to: str
    deadline_ms: int
    body: bytes
    budget_ms: int | None = None
    """Ms of the deadline left when queued (``deadline_ms`` is on the gateway's clock);
    None: no budget field, workers go by ``deadline_ms`` (as for an older gateway)."""
    traceparent: str = ""
    """W3C ``traceparent`` of the enqueue span; empty: the request is not traced (the
    entry then has no trace fields)."""
    tracestate: str = ""
    """W3C ``tracestate`` that goes with ``traceparent`` (often empty)."""


@dataclass(frozen=True)
class Refused:
    """``enqueue_many``'s answer for a request not queued: the stream held ``backlog``
    entries, at or over the limit; or (``queued_bytes`` set) its bodies already took
    ``queued_bytes`` and this one would pass the byte limit."""

    backlog: int
    queued_bytes: int | None = None


# XLEN and the queued-bytes counter, then per request: refuse when the stream is at its
# entry limit (answer: the backlog, >= 0) or the body would take the queued bytes past
# the byte limit (answer: -1 - queued bytes), else XADD. One script call per stream and
# tick: exactly the semantics of check-then-XADD per request, without a race between
# the check and the add, in one round trip. KEYS: the stream, its byte counter.
# Two variants: untraced entries (5 arguments each) and traced ones (7: plus
# traceparent and tracestate), so a gateway with tracing off sends what it always did.
_ENQUEUE_TEMPLATE = """
local limit = tonumber(ARGV[1])
local maxlen = ARGV[2]
local byte_limit = tonumber(ARGV[3])
local length = redis.call('XLEN', KEYS[1])
local bytes = 0
if length > 0 then
  bytes = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), 0)
end
local added = 0
local answers = {}
for i = 4, #ARGV, STRIDE do
  local size = string.len(ARGV[i + 4])
  if length >= limit then
    answers[#answers + 1] = length
  elseif length > 0 and bytes + size > byte_limit then
    answers[#answers + 1] = -1 - bytes
  else
    answers[#answers + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*',
      'id', ARGV[i], 'reply', ARGV[i + 1], 'deadline', ARGV[i + 2], 'budget', ARGV[i + 3],
      'body', ARGV[i + 4]TRACE)
    length = length + 1
    bytes = bytes + size
    added = added + 1
  end
end
if added > 0 then
  redis.call('SET', KEYS[2], bytes)
end
return answers
"""
_ENQUEUE_MANY = _ENQUEUE_TEMPLATE.replace("STRIDE", "5").replace("TRACE", "")
_ENQUEUE_MANY_TRACED = _ENQUEUE_TEMPLATE.replace("STRIDE", "7").replace(
    "TRACE", ", 'traceparent', ARGV[i + 5], 'tracestate', ARGV[i + 6]"
)
_ENQUEUE_MANY_SHA = hashlib.sha1(_ENQUEUE_MANY.encode()).hexdigest()
_ENQUEUE_MANY_TRACED_SHA = hashlib.sha1(_ENQUEUE_MANY_TRACED.encode()).hexdigest()


async def enqueue_many(
    redis: RedisClient,
    model: str,
    version: int,
    entries: Sequence[NewEntry],
    *,
    limit: int,
    maxlen: int,
    byte_limit: int = 2**62,
    partition: int = 0,
) -> list[str | Refused]:
    """Queue ``entries`` on ``model`` ``version``'s stream (partition ``partition``) in
    order, each only while the
    stream holds fewer than ``limit`` entries and its bodies, this one included, take at
    most ``byte_limit`` bytes (the gateway's backlog checks, done atomically with the
    XADD; a body alone over ``byte_limit`` is queued only into an empty stream, the
    gateway refuses it before). Returns, per entry, its stream entry id or ``Refused``.

    ``maxlen`` (approximate trimming) is a safety net only: the gateway refuses work
    when ``backlog`` is over its limit, so trimming should never drop live entries.
    """
    traced = any(entry.traceparent for entry in entries)
    args: list[bytes | str | int] = [limit, maxlen, byte_limit]
    for entry in entries:
        budget = "" if entry.budget_ms is None else str(int(entry.budget_ms))
        args += [entry.request_id, entry.reply_to, str(int(entry.deadline_ms)), budget, entry.body]
        if traced:  # an untraced entry of a traced call gets empty trace fields
            args += [entry.traceparent, entry.tracestate]
    script, sha = (
        (_ENQUEUE_MANY_TRACED, _ENQUEUE_MANY_TRACED_SHA)
        if traced
        else (_ENQUEUE_MANY, _ENQUEUE_MANY_SHA)
    )
    key = stream_key(model, version, partition)
    counter = queued_bytes_key(key)
    try:
        answers = await redis.evalsha(sha, 2, key, counter, *args)  # type: ignore[no-untyped-call]
    except NoScriptError:  # first use on this server (or it restarted): load it
        answers = await redis.eval(script, 2, key, counter, *args)  # type: ignore[no-untyped-call]
    return [_enqueue_answer(answer) for answer in answers]


def _enqueue_answer(answer: bytes | str | int) -> str | Refused:
    if not isinstance(answer, int):
        return _text(answer)
    if answer < 0:
        return Refused(backlog=0, queued_bytes=-1 - answer)
    return Refused(backlog=answer)


async def backlog(redis: RedisClient, model: str, version: int, partition: int = 0) -> int:
    """Entries in the stream (of one partition): not yet read plus read but not yet
    acknowledged.

    Workers XDEL what they acknowledge, so XLEN is exactly the outstanding work.
    """
    return int(await redis.xlen(stream_key(model, version, partition)))


async def pop_replies(
    redis: RedisClient,
    reply_to: str,
    *,
    timeout_s: float,
    max_count: int = 256,
    blmpop: bool = False,
) -> list[bytes]:
    """Block up to ``timeout_s`` for replies on ``reply_to`` and take up to ``max_count``.
    Returns raw payloads (``codec.decode_reply``).

    ``blmpop`` (Redis >= 7, see ``supports_blmpop``): one ``BLMPOP … COUNT`` round trip;
    otherwise BLPOP for the first reply, then LPOP of up to ``max_count - 1`` more.
    """
    if blmpop:
        answer = await redis.execute_command(  # type: ignore[no-untyped-call]
            "BLMPOP",
            timeout_s,
            1,
            reply_to,
            "LEFT",
            "COUNT",
            max_count,
            **_on_node(redis, reply_to),
        )
        return list(answer[1]) if answer else []
    first = await redis.blpop([reply_to], timeout=timeout_s)
    if first is None:
        return []
    payloads = [first[1]]
    more = await redis.lpop(reply_to, max_count - 1) if max_count > 1 else None
    if more:
        payloads.extend(more if isinstance(more, list) else [more])
    return payloads


async def read_rules(redis: RedisClient, models: Sequence[str]) -> dict[str, str]:
    """The stored routing rules of ``models`` (one MGET), raw JSON by model; a model
    without a rule is absent. A value that is not UTF-8 is returned as decoded with
    replacement characters (the reader's validation refuses it)."""
    if not models:
        return {}
    values = await _mget(redis, [routing_key(model) for model in models])
    return {
        model: value.decode("utf-8", "replace")
        for model, value in zip(models, values, strict=True)
        if value is not None
    }


async def write_rule(redis: RedisClient, model: str, raw: str) -> None:
    """Store ``model``'s routing rule (JSON validated by the caller), replacing any."""
    await redis.set(routing_key(model), raw.encode())


async def delete_rule(redis: RedisClient, model: str) -> bool:
    """Remove ``model``'s routing rule; True when there was one."""
    return bool(await redis.delete(routing_key(model)))


# KEYS: the record. ARGV: the claim, its TTL. The stored record, or nil after storing the
# claim (SET NX + GET in one call; also on Redis 6.2, where SET cannot take both).
_CLAIM = """
local found = redis.call('GET', KEYS[1])
if found then
  return found
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""
# KEYS: the record. ARGV: the claim. Deletes the record only while it is that claim.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


async def claim_idempotency(redis: RedisClient, key: str, claim: bytes, ttl_s: int) -> bytes | None:
    """Store ``claim`` at ``key`` for ``ttl_s`` unless a record is there; None when
    stored, else the record found (atomic)."""
    found = await redis.eval(_CLAIM, 1, key, claim, ttl_s)  # type: ignore[no-untyped-call]
    return bytes(found) if found is not None else None


async def get_idempotency(redis: RedisClient, key: str) -> bytes | None:
    found = await redis.get(key)
    return bytes(found) if found is not None else None


async def put_idempotency(redis: RedisClient, key: str, record: bytes, ttl_s: int) -> None:
    await redis.set(key, record, ex=ttl_s)


async def release_idempotency(redis: RedisClient, key: str, claim: bytes) -> None:
    """Delete ``key`` if it still holds ``claim`` (a later claim is left alone)."""
    await redis.eval(_RELEASE, 1, key, claim)  # type: ignore[no-untyped-call]


async def supports_blmpop(redis: RedisClient) -> bool:
    """True when the server has ``BLMPOP`` (Redis >= 7.0)."""
    info = await redis.info("server")
    major = str(info.get("redis_version", "0")).split(".", 1)[0]
    return major.isdigit() and int(major) >= 7


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker publishes in its heartbeat."""

    instance: str
    model: str
    version: int
    provider: str
    max_batch_rows: int
    metadata: Mapping[str, Any]
    stats: Mapping[str, Any]
    started_at_ms: int
    updated_at_ms: int
    pid: int = 0
    host: str = ""
    partitions: int = 1
    """How many stream partitions of the model version this worker's process reads
    (``AXON_PARTITIONS``); the gateway spreads requests over as many as every live
    worker reads. 1 in heartbeats from before partitions."""
    partition: int = 0
    """The partition this heartbeat's consumer reads."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "instance": self.instance,
                "model": self.model,
                "version": self.version,
                "provider": self.provider,
                "max_batch_rows": self.max_batch_rows,
                "metadata": self.metadata,
                "stats": self.stats,
                "started_at_ms": self.started_at_ms,
                "updated_at_ms": self.updated_at_ms,
                "pid": self.pid,
                "host": self.host,
                "partitions": self.partitions,
                "partition": self.partition,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerInfo:
        """Parse a heartbeat; raises ``ValueError`` for anything malformed (not JSON, a
        field missing or of the wrong type): one worker's bad heartbeat (another
        release during a rolling upgrade) must never break a reader."""
        try:
            data = json.loads(raw)
            info = cls._from_dict(data)
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed heartbeat ({type(exc).__name__}: {exc})") from None
        if not isinstance(info.metadata, Mapping) or not isinstance(info.stats, Mapping):
            raise ValueError("malformed heartbeat: metadata and stats must be objects")
        return info

    @classmethod
    def _from_dict(cls, data: Any) -> WorkerInfo:
        return cls(
            instance=str(data["instance"]),
            model=str(data["model"]),
            version=int(data["version"]),
            provider=str(data["provider"]),
            max_batch_rows=int(data["max_batch_rows"]),
            metadata=data["metadata"],
            stats=data["stats"],
            started_at_ms=int(data["started_at_ms"]),
            updated_at_ms=int(data["updated_at_ms"]),
            pid=int(data.get("pid", 0)),
            host=str(data.get("host", "")),
            partitions=max(int(data.get("partitions", 1)), 1),
            partition=max(int(data.get("partition", 0)), 0),
        )


async def live_workers(
    redis: RedisClient,
    model: str | None = None,
    version: int | None = None,
    *,
    malformed: list[str] | None = None,
) -> list[WorkerInfo]:
    """Workers whose heartbeat has not expired, optionally for one model (version).

    A model version is ready at the gateway when this returns at least one worker.
    Heartbeats that do not parse are skipped; their keys are appended to ``malformed``.
    """
    pattern = worker_pattern(model, version)
    keys = [key async for key in redis.scan_iter(match=pattern, count=500)]
    if not keys:
        return []
    values = await _mget(redis, keys)
    workers = []
    for key, value in zip(keys, values, strict=True):
        if value is None:  # expired between SCAN and MGET
            continue
        try:
            info = WorkerInfo.from_json(value)
        except ValueError:
            if malformed is not None:
                malformed.append(_text(key))
            continue
        if (model is None or info.model == model) and (version is None or info.version == version):
            workers.append(info)
    return sorted(workers, key=lambda w: (w.model, w.version, w.instance))


# --------------------------------------------------------------------------- worker


async def ensure_group(redis: RedisClient, stream: str) -> None:
    """Create the stream and its ``workers`` group if missing (idempotent).

    A new group starts at ``0``: entries queued before any worker existed are served.
    """
    try:
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def read_entries(
    redis: RedisClient, stream: str, consumer: str, *, count: int, block_ms: int | None
) -> list[StreamEntry]:
    """XREADGROUP up to ``count`` new entries; ``block_ms`` None = do not block."""
    command = read_command([stream], consumer, count=count, block_ms=block_ms)
    response = await redis.execute_command(*command, **_on_node(redis, stream))  # type: ignore[no-untyped-call]
    return read_answer(response).get(stream, [])


def read_command(
    streams: Sequence[str], consumer: str, *, count: int, block_ms: int | None
) -> list[Any]:
    """The XREADGROUP of up to ``count`` new entries from each of ``streams`` (of one
    slot), blocking up to ``block_ms`` until any has one (None: not at all)."""
    command: list[Any] = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count]
    if block_ms is not None:
        command += ["BLOCK", block_ms]
    return [*command, "STREAMS", *streams, *(">" for _ in streams)]


def read_answer(response: Any) -> dict[str, list[StreamEntry]]:
    """``read_command``'s answer (as redis-py's callback shapes it): the entries by stream;
    a stream with none is absent, an entry deleted while pending is left out."""
    found: dict[str, list[StreamEntry]] = {}
    for stream, items in response or []:
        entries = [
            StreamEntry(_text(entry_id), dict(fields))
            for entry_id, fields in items
            if fields is not None  # deleted while pending: nothing to serve
        ]
        if entries:
            found.setdefault(_text(stream), []).extend(entries)
    return found


async def claim_stale(
    redis: RedisClient, stream: str, consumer: str, *, min_idle_ms: int, count: int
) -> list[StreamEntry]:
    """XAUTOCLAIM entries pending longer than ``min_idle_ms`` (their worker is gone or
    stuck) for ``consumer``, with their delivery counts (this claim included).

    Only one claimer wins an entry: XAUTOCLAIM resets its idle time atomically.
    """
    result = await redis.xautoclaim(
        stream, GROUP, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
    )
    items = result[1] if len(result) > 1 else []
    claimed = [(_text(entry_id), dict(fields)) for entry_id, fields in items if fields]
    if not claimed:
        return []
    pipe = redis.pipeline(transaction=False)
    for entry_id, _fields in claimed:
        pipe.xpending_range(stream, GROUP, min=entry_id, max=entry_id, count=1)
    pending = await pipe.execute()
    entries = []
    for (entry_id, fields), info in zip(claimed, pending, strict=True):
        deliveries = int(info[0]["times_delivered"]) if info else 1
        entries.append(StreamEntry(entry_id, fields, deliveries=deliveries))
    return entries


async def claim_orphans(
    redis: RedisClient,
    stream: str,
    consumer: str,
    *,
    model: str,
    version: int,
    min_idle_ms: int,
    count: int,
) -> list[StreamEntry]:
    """XCLAIM for ``consumer`` up to ``count`` entries pending with consumers that have no
    heartbeat key (their worker died, or stopped heart-beating for a whole TTL) and idle
    at least ``min_idle_ms``, with their delivery counts (this claim included).

    A dead worker's entries are taken over as soon as its heartbeat expires instead of
    after the claim timeout (which must exceed the longest batch run, so it is long):
    a restarted worker, or a surviving replica, answers them within the deadline.
    """
    consumers = await redis.xinfo_consumers(stream, GROUP)  # type: ignore[no-untyped-call]
    names = [
        _text(c["name"])
        for c in consumers
        if int(c["pending"]) > 0 and _text(c["name"]) != consumer
    ]
    if not names:
        return []
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.exists(worker_key(model, version, name))
    flags = await pipe.execute()
    entries: list[StreamEntry] = []
    for name, exists in zip(names, flags, strict=True):
        if exists or len(entries) >= count:
            continue
        rows = await redis.xpending_range(
            stream,
            GROUP,
            min="-",
            max="+",
            count=count - len(entries),
            consumername=name,
            idle=min_idle_ms,
        )
        if not rows:
            continue
        delivered = {_text(r["message_id"]): int(r["times_delivered"]) for r in rows}
        items = await redis.xclaim(stream, GROUP, consumer, min_idle_ms, list(delivered))  # type: ignore[no-untyped-call]
        for entry_id, fields in items:
            if fields:
                key = _text(entry_id)
                entries.append(StreamEntry(key, dict(fields), deliveries=delivered[key] + 1))
    return entries


# KEYS: the stream, its queued-bytes counter, then each reply list. ARGV: the lists'
# TTL, then per answer the index of its list in KEYS, the reply, the entry id, the size
# of the entry's body. An answer is pushed (and its size subtracted) only if its entry
# was still pending (XACK returned 1): running the script twice (a retry after the reply
# to the first call was lost, or another worker answered a claimed copy) answers once.
_COMPLETE = """
local stream = KEYS[1]
local push = {}
local acked = {}
local freed = 0
for i = 2, #ARGV, 4 do
  local id = ARGV[i + 2]
  if redis.call('XACK', stream, 'workers', id) == 1 then
    freed = freed + tonumber(ARGV[i + 3])
    local l = tonumber(ARGV[i])
    local payloads = push[l]
    if payloads == nil then
      payloads = {}
      push[l] = payloads
    end
    payloads[#payloads + 1] = ARGV[i + 1]
    acked[#acked + 1] = id
  end
end
for l, payloads in pairs(push) do
  redis.call('RPUSH', KEYS[l], unpack(payloads))
  redis.call('EXPIRE', KEYS[l], ARGV[1])
end
if #acked > 0 then
  redis.call('XDEL', stream, unpack(acked))
end
if freed > 0 and redis.call('DECRBY', KEYS[2], freed) < 0 then
  redis.call('SET', KEYS[2], 0)
end
return #acked
"""
_COMPLETE_SHA = hashlib.sha1(_COMPLETE.encode()).hexdigest()
_COMPLETE_MAX_ANSWERS = 1000
"""Answers per script call (Lua's unpack has a C-stack limit); more take several calls."""


async def complete(
    redis: RedisClient,
    stream: str,
    answers: Sequence[tuple[Outgoing, str]],
    *,
    reply_ttl_s: int,
    sizes: Sequence[int] | None = None,
) -> int:
    """Answer entries: per ``(reply, entry id)`` RPUSH the reply (+ EXPIRE its list), XACK
    and XDEL the entry — one server-side script, one round trip per batch. Returns how
    many entries were answered.

    Atomic per entry: an entry is never acknowledged without its reply, nor answered and
    left pending. Idempotent: an entry no longer pending (already answered, or gone with
    a Redis restart without persistence) gets no reply, so retrying after a connection
    error cannot answer a request twice. A script rather than MULTI: less worker CPU
    (docs/decisions.md, "The gateway's request path").
    """
    done = 0
    all_sizes = list(sizes) if sizes is not None else [0] * len(answers)
    for start in range(0, len(answers), _COMPLETE_MAX_ANSWERS):
        end = start + _COMPLETE_MAX_ANSWERS
        args = _complete_args(stream, answers[start:end], all_sizes[start:end], reply_ttl_s)
        try:
            done += int(await redis.evalsha(_COMPLETE_SHA, *args))  # type: ignore[no-untyped-call]
        except NoScriptError:  # first use on this server (or it restarted): load it
            done += int(await redis.eval(_COMPLETE, *args))  # type: ignore[no-untyped-call]
    return done


async def complete_and_read(
    redis: FastRedis,
    stream: str,
    answers: Sequence[tuple[Outgoing, str]],
    *,
    reply_ttl_s: int,
    sizes: Sequence[int],
    read: Sequence[Any],
) -> tuple[int | Exception, Any]:
    """``complete`` and then the stream read ``read`` (``read_command``) in one write and
    one round trip (``FastRedis.pipelined``): how many entries were answered and the
    read's answer (as ``execute_command`` gives it), each the Redis error it got
    instead, in its place, so that entries read are never dropped because the
    completion failed. A lost connection raises (as ``complete`` and a read would)."""
    if len(answers) > _COMPLETE_MAX_ANSWERS:  # several script calls: not one pipeline
        done: int | Exception = await complete(
            redis, stream, answers, reply_ttl_s=reply_ttl_s, sizes=sizes
        )
        (response,) = await redis.pipelined([read])
        return done, response
    args = _complete_args(stream, answers, sizes, reply_ttl_s)
    answered, response = await redis.pipelined([["EVALSHA", _COMPLETE_SHA, *args], read])
    if isinstance(answered, NoScriptError):  # first use on this server (or it restarted)
        answered = await redis.eval(_COMPLETE, *args)  # type: ignore[no-untyped-call]
    return (answered if isinstance(answered, Exception) else int(answered)), response


def _complete_args(
    stream: str, answers: Sequence[tuple[Outgoing, str]], sizes: Sequence[int], reply_ttl_s: int
) -> list[Any]:
    """``[numkeys, *keys, *args]`` of the ``_COMPLETE`` script."""
    lists: dict[str, int] = {}
    args: list[Any] = [reply_ttl_s]
    for (outgoing, entry_id), size in zip(answers, sizes, strict=True):
        index = lists.setdefault(outgoing.reply_to, len(lists) + 3)
        args += [index, encode_reply(outgoing.reply), entry_id, size]
    return [2 + len(lists), stream, queued_bytes_key(stream), *lists, *args]


async def dead_letter(
    redis: RedisClient,
    model: str,
    version: int,
    entry: StreamEntry,
    *,
    reason: str,
    consumer: str,
    reply: Outgoing | None,
    reply_ttl_s: int,
    maxlen: int,
    partition: int = 0,
) -> None:
    """Move ``entry`` from the model version's stream (its ``partition``) to the
    dead-letter stream of that partition (``dlq_key``), answer its caller, XACK and XDEL
    it (one transaction: every key is in the stream's slot, the reply list too).

    The dead-letter stream is bounded three ways: ``maxlen`` entries (approximate), a
    body over ``DLQ_MAX_BODY_BYTES`` kept as its first bytes only (``body_bytes`` holds
    its size), and the whole stream expiring ``DLQ_TTL_S`` after its last addition.
    """
    stream = stream_key(model, version, partition)
    dead = dlq_key(model, version, partition)
    fields = dead_letter_fields(entry, stream, reason=reason, consumer=consumer)
    body = entry.fields.get(FIELD_BODY, b"")
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(dead, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    pipe.expire(dead, DLQ_TTL_S)
    if body:
        pipe.decrby(queued_bytes_key(stream), len(body))
    if reply is not None:
        pipe.rpush(reply.reply_to, encode_reply(reply.reply))
        pipe.expire(reply.reply_to, reply_ttl_s)
    pipe.xack(stream, GROUP, entry.entry_id)
    pipe.xdel(stream, entry.entry_id)
    await pipe.execute()


def dead_letter_fields(
    entry: StreamEntry, stream: str, *, reason: str, consumer: str
) -> dict[bytes, bytes]:
    """The fields of ``entry``'s dead letter (``dead_letter``): its own (the body cut to
    ``DLQ_MAX_BODY_BYTES``) plus ``stream``, ``entry``, ``deliveries``, ``reason``,
    ``consumer``, ``at``, ``body_bytes`` (and ``body_truncated``)."""
    fields: dict[bytes, bytes] = dict(entry.fields)
    body = fields.get(FIELD_BODY, b"")
    if len(body) > DLQ_MAX_BODY_BYTES:
        fields[FIELD_BODY] = body[:DLQ_MAX_BODY_BYTES]
        fields[b"body_truncated"] = b"1"
    fields[b"body_bytes"] = str(len(body)).encode()
    fields.update(
        {
            b"stream": stream.encode(),
            b"entry": entry.entry_id.encode(),
            b"deliveries": str(entry.deliveries).encode(),
            b"reason": reason.encode(),
            b"consumer": consumer.encode(),
            b"at": str(int(time.time() * 1000)).encode(),
        }
    )
    return fields


async def publish_heartbeat(redis: RedisClient, info: WorkerInfo, *, ttl_ms: int) -> None:
    """SET ``axon:w:{model}:{version}:{instance}`` to the worker's info with a TTL."""
    await redis.set(worker_key(info.model, info.version, info.instance), info.to_json(), px=ttl_ms)


async def deregister(redis: RedisClient, model: str, version: int, instance: str) -> None:
    """Remove a worker's heartbeat key (graceful stop)."""
    await redis.delete(worker_key(model, version, instance))


async def server_time(redis: RedisClient, key: str) -> float:
    """Unix time in seconds on the Redis server holding ``key`` (on a cluster, the node
    serving its slot: entry ids carry that node's clock, so deadlines compare with it)."""
    if isinstance(redis, RedisCluster):
        node = redis.get_node_from_key(key)
        seconds, micros = await redis.execute_command("TIME", target_nodes=node)  # type: ignore[no-untyped-call]
    else:
        seconds, micros = await redis.time()
    return int(seconds) + int(micros) / 1e6


def _on_node(redis: RedisClient, key: str) -> dict[str, Any]:
    """On a cluster, the node serving ``key``'s slot as ``target_nodes``: for commands
    whose keys redis-py cannot find in their arguments itself (BLMPOP, XREADGROUP:
    "movable keys") it would otherwise ask the server first (``COMMAND GETKEYS``, one
    more round trip per call: measured 4 per request). A slot that moved is followed
    as for any command (MOVED updates the client's slot map)."""
    if isinstance(redis, RedisCluster):
        return {"target_nodes": redis.get_node_from_key(key)}
    return {}


async def _mget(redis: RedisClient, keys: Sequence[bytes | str]) -> list[bytes | None]:
    """MGET; on a cluster one MGET per slot (the keys of several model versions live in
    several slots), answers in the order of ``keys``."""
    if isinstance(redis, RedisCluster):
        return list(await redis.mget_nonatomic(keys))
    return list(await redis.mget(keys))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
