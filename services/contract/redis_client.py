"""The one way Axon's processes (gateway, model workers) build their Redis client."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


def connect(url: str, *, socket_timeout_s: float, connect_timeout_s: float) -> Redis[bytes]:
    """A client (connection pool) for ``url`` (``redis://`` or ``rediss://``, password and
    TLS options in the URL); connections open on first use.

    ``socket_timeout_s`` must exceed the longest blocking command the caller issues.
    A command that fails with a connection error is retried once, at once, on a fresh
    connection: after a Redis restart every pooled connection is stale and fails once,
    which must not look like an outage. A second failure is raised (Redis really is down).
    A *timeout* is never retried: the command may have run (an XADD re-sent after a
    timeout could queue a request twice), and a stalled Redis must not double the wait.
    """
    client: Redis[bytes] = Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        retry_on_error=[RedisConnectionError],
        retry_on_timeout=False,
    )
    return client
