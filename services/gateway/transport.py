"""The queue seam of the gateway: the one small interface between the gateway's request
handling and the queue the workers pull from.

The gateway needs three things of a queue, and nothing else:

- **submit** a request's stream entry under the backlog limits → accepted (the entry
  id) or ``Refused`` (a limit was reached);
- **replies**: a future per waiting request, completed when its worker answers
  (``Replies``, fed by the transport's ``receive`` task);
- a **registry view**: the live workers and the metadata they publish;
- **jobs** (``Prefer: respond-async``): ``submit_job`` queues an entry on the model
  version's job stream with its stored job, ``get_job`` reads a job and, once a worker
  answered it, its reply (``services.contract.jobs``);
- **shadow copies** (``services.gateway.shadow``): jobs under shadow job keys, queued
  by ``submit_jobs`` and read back (and deleted) by ``collect_jobs``, each one round
  trip per model version for many copies;
- **captures** (``services.gateway.capture``): ``capture`` appends sampled requests and
  replies to a model's capped capture stream, ``read_captures`` reads the newest back
  (``services.contract.capture``);
- **routing rules**: one JSON document per model (``get_rules`` / ``put_rule`` /
  ``delete_rule``), shared by every gateway on the queue; the transport stores the
  text as given, ``routing_rules`` validates it on both sides.

``services.gateway.transport_redis.RedisTransport`` is the implementation that runs;
``services.gateway.transport_memory.MemoryTransport`` keeps everything in the process,
for tests of the gateway's behaviour without Redis. Both pass the same contract tests
(``tests/integration/gateway/test_transport_contract.py``, the Redis one against a real
server).

Errors: ``TransportDown`` (the queue is unreachable: the gateway marks itself not
ready) and ``TransportError`` (the queue answered this one command with an error, e.g.
Redis OOM or READONLY: only that request fails).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Protocol

from services.contract.capture import Captured
from services.contract.jobs import JobRecord, NewJob
from services.contract.protocol import NewEntry, Refused, WorkerInfo
from services.contract.queue_view import DeadLetter, QueueCounts, Redriven
from services.gateway.errors import UnavailableError
from services.gateway.replies import Replies


class TransportDown(Exception):
    """The queue is unreachable; ``str(exc)`` names it (e.g. "Redis is unreachable")."""

    def __init__(self, backend: str) -> None:
        super().__init__(f"{backend} is unreachable")
        self.backend = backend


class TransportError(Exception):
    """The queue refused one command; ``detail`` says why (e.g. Redis' OOM message)."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend} refused the command ({detail})")
        self.backend = backend
        self.detail = detail


class Transport(Protocol):
    """What the gateway uses of a queue (see the module docstring)."""

    replies: Replies
    """Futures of the requests waiting for a reply, by entry id."""

    name: str
    """The queue as client messages name it ("Redis is unreachable")."""

    def reply_to(self, model: str, version: int, partition: int = 0) -> str:
        """Where workers send this gateway's replies to the requests of ``model``
        ``version`` (its stream ``partition``): the entry's ``reply`` field. From the
        first call on, replies there are received."""
        ...

    @property
    def healthy(self) -> bool:
        """True while replies can arrive (the receive path is connected)."""
        ...

    def submit(
        self,
        model: str,
        version: int,
        entry: NewEntry,
        *,
        limit: int,
        maxlen: int,
        byte_limit: int,
        partition: int = 0,
    ) -> asyncio.Future[str | Refused]:
        """Queue ``entry`` for ``model`` ``version`` (on its stream ``partition``) unless
        the stream holds ``limit``
        entries or its bodies with this one would pass ``byte_limit`` bytes (atomic with
        the add). The future's result is the entry id or ``Refused``; it raises
        ``TransportDown`` / ``TransportError``. Never re-sent: after a timeout the entry
        may or may not be queued. ``maxlen`` is a safety net on the stream's length."""
        ...

    async def submit_job(
        self, model: str, version: int, job: NewJob, *, limit: int, maxlen: int, byte_limit: int
    ) -> str | Refused:
        """Queue ``job`` on ``model`` ``version``'s job stream and store it for
        ``job.ttl_s`` s, unless the job stream holds ``limit`` entries or its bodies with
        this one would pass ``byte_limit`` (atomic): the entry id or ``Refused``. Workers
        take job entries only for the room their batches have left after the request
        stream. Raises ``TransportDown`` / ``TransportError``."""
        ...

    async def get_job(self, key: str) -> JobRecord | None:
        """The job stored at ``key`` (its meta, and its raw reply once answered); None
        when unknown or expired. Raises ``TransportDown`` / ``TransportError``."""
        ...

    async def submit_jobs(
        self,
        model: str,
        version: int,
        jobs: Sequence[NewJob],
        *,
        limit: int,
        maxlen: int,
        byte_limit: int,
    ) -> list[str | Refused]:
        """``submit_job`` for each of ``jobs`` in order (the limits checked before
        each), in one round trip: per job its entry id or ``Refused``. Raises
        ``TransportDown`` / ``TransportError`` (then none or some may be queued)."""
        ...

    async def collect_jobs(
        self, keys: Sequence[str], drop: Sequence[str] = ()
    ) -> list[bytes | None]:
        """The raw reply stored in each job of ``keys`` (None: not answered yet, or no
        such job), deleting every job answered here and every job of ``drop`` (given
        up: a later answer is not stored). All keys of one model version (one hash
        slot); one round trip. Raises ``TransportDown`` / ``TransportError``."""
        ...

    async def capture(
        self, model: str, items: Sequence[Captured], *, maxlen: int, max_age_s: int
    ) -> None:
        """Append ``items`` to ``model``'s capture stream, keeping about its newest
        ``maxlen`` entries and none older than ``max_age_s`` before the newest item's
        ``at_ms`` (the stream expires ``max_age_s`` after this append); one round trip.
        Raises ``TransportDown`` / ``TransportError``."""
        ...

    async def read_captures(self, model: str, count: int) -> list[Captured]:
        """The newest ``count`` captures of ``model``, oldest first (with their entry
        ids). Raises ``TransportDown`` / ``TransportError``."""
        ...

    async def live_workers(self, malformed: list[str]) -> list[WorkerInfo]:
        """Workers whose heartbeat is alive, sorted by (model, version, instance);
        heartbeats that do not parse are skipped and named in ``malformed``. Raises
        ``TransportDown`` / ``TransportError``."""
        ...

    async def get_rules(self, models: Sequence[str]) -> dict[str, str]:
        """The stored routing rules of ``models``: raw JSON by model, a model without a
        rule absent. One round trip. Raises ``TransportDown`` / ``TransportError``."""
        ...

    async def put_rule(self, model: str, raw: str) -> None:
        """Store ``model``'s routing rule, replacing any. Raises ``TransportDown`` /
        ``TransportError``."""
        ...

    async def delete_rule(self, model: str) -> bool:
        """Remove ``model``'s routing rule; True when there was one. Raises
        ``TransportDown`` / ``TransportError``."""
        ...

    async def receive(self, on_down: Callable[[], None]) -> None:
        """Deliver replies into ``replies`` until cancelled; no error ends it. When the
        queue becomes unreachable it calls ``on_down`` and fails every waiting request
        (``UnavailableError``), then retries with a backoff."""
        ...

    async def aclose(self) -> None:
        """Release connections (at shutdown, after ``receive`` was cancelled)."""
        ...

    # Idempotency-Key records (``services.gateway.idempotency``), shared by every gateway.

    async def claim_idempotency(self, key: str, claim: bytes, ttl_s: int) -> bytes | None:
        """Store ``claim`` at ``key`` for ``ttl_s`` s unless a record is there (atomic):
        None when stored, else the record found. Raises ``TransportDown`` /
        ``TransportError``."""
        ...

    async def get_idempotency(self, key: str) -> bytes | None:
        """The record at ``key``; None when there is none (released or expired)."""
        ...

    async def put_idempotency(self, key: str, record: bytes, ttl_s: int) -> None:
        """Replace the record at ``key``, for ``ttl_s`` s."""
        ...

    async def release_idempotency(self, key: str, claim: bytes) -> None:
        """Delete ``key`` while it still holds ``claim``."""
        ...

    # The console's view of the queue (``services.contract.queue_view``).

    async def queue_counts(
        self,
        versions: Sequence[tuple[str, int]],
        partitions: Mapping[tuple[str, int], int] | None = None,
    ) -> list[QueueCounts]:
        """Backlog and dead-letter count of each (model, version), in order, over its
        stream ``partitions`` (1 when absent); one round trip. Raises ``TransportDown``
        / ``TransportError``."""
        ...

    async def dead_letters(
        self, model: str, version: int, count: int, partitions: int = 1
    ) -> list[DeadLetter]:
        """Up to ``count`` dead letters of the version (its ``partitions``), newest
        first. Raises
        ``TransportDown`` / ``TransportError``."""
        ...

    async def redrive(
        self, model: str, version: int, dead_letter_id: str, partitions: int = 1
    ) -> Redriven | None:
        """Move a dead letter back to its request stream (of whichever of ``partitions``
        it came from) (atomic; original fields); None
        when there is no such dead letter. Raises ``RedriveRefused`` (its body was cut),
        ``TransportDown`` / ``TransportError``."""
        ...


@contextlib.asynccontextmanager
async def queue_errors_as_503(
    name: str, refused: str = "refused the command"
) -> AsyncIterator[None]:
    """The queue's errors as 503 for an admin or console endpoint: ``TransportDown`` →
    "{name} is unreachable; try again shortly", ``TransportError`` → "{name} {refused}
    ({detail})"."""
    try:
        yield
    except TransportDown as exc:
        raise UnavailableError(f"{name} is unreachable; try again shortly") from exc
    except TransportError as exc:
        raise UnavailableError(f"{name} {refused} ({exc.detail})") from exc
