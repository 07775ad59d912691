"""The Redis side of shadow copies (``services.gateway.shadow``): a shadow copy is an
async job (``services.contract.jobs``) on the shadow version's job stream, so the
version's workers take it only for the room their batches leave after synchronous
requests. Nothing changes for workers; the gateway reads the stored replies back.

- ``shadow_job_key``: ``axon:job:{model:version}:shadow-{token}``; a client's job key
  ends in a hex digest (``services.gateway.jobs``), so no ``/v1/jobs/{id}`` reaches one.
- ``enqueue_jobs``: the copies of one model version gathered in an event-loop tick,
  queued by one script (each as ``jobs.enqueue_job`` would: the job stream's limits
  checked before each, the job's hash written with it), so a copy costs no Redis round
  trip of its own.
- ``collect_replies``: one script per model version (its keys share the version's hash
  slot) returns the stored reply of each key, deleting each job that was answered, and
  deletes the jobs the gateway gave up on, so a late answer is never stored (the
  completion script stores a reply only while its job exists).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from redis.exceptions import NoScriptError

from services.contract.jobs import NewJob, job_bytes_key, job_key, job_stream_key
from services.contract.protocol import RedisClient, Refused

SHADOW_PREFIX = "shadow-"


def shadow_job_key(model: str, version: int, token: str) -> str:
    """A shadow copy's job key in ``model`` ``version``'s slot."""
    return job_key(model, version, f"{SHADOW_PREFIX}{token}")


# KEYS: the job stream, its byte counter, then each job's key. ARGV: limit, maxlen, byte
# limit, then per job: request id, deadline, budget, body, meta, TTL. Per job, as
# ``jobs._ENQUEUE_JOB``: refused (the backlog, >= 0; or -1 - queued bytes) or its hash
# written and its entry added (the entry id).
_ENQUEUE = """
local limit = tonumber(ARGV[1])
local byte_limit = tonumber(ARGV[3])
local length = redis.call('XLEN', KEYS[1])
local bytes = 0
if length > 0 then
  bytes = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), 0)
end
local out = {}
local added = 0
for j = 3, #KEYS do
  local base = 4 + (j - 3) * 6
  local body = ARGV[base + 3]
  local size = string.len(body)
  if length >= limit then
    out[#out + 1] = length
  elseif length > 0 and bytes + size > byte_limit then
    out[#out + 1] = -1 - bytes
  else
    redis.call('DEL', KEYS[j])
    redis.call('HSET', KEYS[j], 'meta', ARGV[base + 4], 'ttl', ARGV[base + 5])
    redis.call('EXPIRE', KEYS[j], ARGV[base + 5])
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'id', ARGV[base],
      'reply', KEYS[j], 'deadline', ARGV[base + 1], 'budget', ARGV[base + 2], 'body', body)
    length = length + 1
    bytes = bytes + size
    added = added + 1
  end
end
if added > 0 then
  redis.call('SET', KEYS[2], bytes)
end
return out
"""
_ENQUEUE_SHA = hashlib.sha1(_ENQUEUE.encode()).hexdigest()
MAX_PER_CALL = 256
"""Jobs per script call (bounds how long one call keeps Redis busy)."""


async def enqueue_jobs(
    redis: RedisClient,
    model: str,
    version: int,
    batch: Sequence[NewJob],
    *,
    limit: int,
    maxlen: int,
    byte_limit: int,
) -> list[str | Refused]:
    """Queue each job of ``batch`` on ``model`` ``version``'s job stream, in order, as
    ``jobs.enqueue_job`` would (limits checked before each; atomic per call of up to
    ``MAX_PER_CALL`` jobs): per job its entry id or ``Refused``."""
    found: list[str | Refused] = []
    for start in range(0, len(batch), MAX_PER_CALL):
        chunk = batch[start : start + MAX_PER_CALL]
        keys = [job_stream_key(model, version), job_bytes_key(model, version)]
        args: list[object] = [limit, maxlen, byte_limit]
        for job in chunk:
            entry = job.entry
            keys.append(job.key)
            budget = "" if entry.budget_ms is None else str(int(entry.budget_ms))
            args += [entry.request_id, str(int(entry.deadline_ms)), budget, entry.body,
                     job.meta, job.ttl_s]  # fmt: skip
        try:
            answers = await redis.evalsha(_ENQUEUE_SHA, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        except NoScriptError:
            answers = await redis.eval(_ENQUEUE, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
        for answer in answers:
            if isinstance(answer, int):
                found.append(
                    Refused(backlog=0, queued_bytes=-1 - answer) if answer < 0 else Refused(answer)
                )
            else:
                found.append(answer.decode() if isinstance(answer, bytes) else str(answer))
    return found


# KEYS: the jobs to read, then the jobs to drop. ARGV[1]: how many to read. Returns one
# value per read key: its reply (and the job is deleted) or false (not answered yet).
_COLLECT = """
local wanted = tonumber(ARGV[1])
local found = {}
for i = 1, wanted do
  local reply = redis.call('HGET', KEYS[i], 'reply')
  if reply then
    redis.call('DEL', KEYS[i])
    found[i] = reply
  else
    found[i] = false
  end
end
for i = wanted + 1, #KEYS do
  redis.call('DEL', KEYS[i])
end
return found
"""
_COLLECT_SHA = hashlib.sha1(_COLLECT.encode()).hexdigest()


async def collect_replies(
    redis: RedisClient, keys: Sequence[str], drop: Sequence[str] = ()
) -> list[bytes | None]:
    """The raw reply (``codec.encode_reply``) stored in each job of ``keys`` (None: not
    answered yet, or gone); answered jobs and the jobs of ``drop`` are deleted. All keys
    must be of one model version (one hash slot). One script call; nothing to do, no
    call."""
    if not keys and not drop:
        return []
    call = [len(keys) + len(drop), *keys, *drop, len(keys)]
    try:
        found = await redis.evalsha(_COLLECT_SHA, *call)  # type: ignore[no-untyped-call]
    except NoScriptError:
        found = await redis.eval(_COLLECT, *call)  # type: ignore[no-untyped-call]
    return [bytes(value) if value else None for value in found]
