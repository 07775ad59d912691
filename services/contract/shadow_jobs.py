"""The Redis side of shadow copies (``services.gateway.shadow``): a shadow copy is an
async job (``services.contract.jobs``) on the shadow version's job stream, so the
version's workers take it only for the room their batches leave after synchronous
requests. Nothing changes for workers; the gateway reads the stored replies back.

- ``shadow_job_key``: ``axon:job:{model:version}:shadow-{token}``; a client's job key
  ends in a hex digest (``services.gateway.jobs``), so no ``/v1/jobs/{id}`` reaches one.
- ``collect_replies``: one script per model version (its keys share the version's hash
  slot) returns the stored reply of each key, deleting each job that was answered, and
  deletes the jobs the gateway gave up on, so a late answer is never stored (the
  completion script stores a reply only while its job exists).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from redis.exceptions import NoScriptError

from services.contract.jobs import job_key
from services.contract.protocol import RedisClient

SHADOW_PREFIX = "shadow-"


def shadow_job_key(model: str, version: int, token: str) -> str:
    """A shadow copy's job key in ``model`` ``version``'s slot."""
    return job_key(model, version, f"{SHADOW_PREFIX}{token}")


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
