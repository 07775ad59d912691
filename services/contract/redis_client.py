"""The one way Axon's processes (gateway, model workers) build their Redis client.

Three deployments, chosen by ``AXON_REDIS_MODE`` or else by the URL's scheme:

- ``standalone``: one server, ``redis://[:password@]host:port/db`` (``rediss://`` for TLS);
- ``cluster``: Redis Cluster, ``redis+cluster://host:port`` (any node: the client learns
  the others and follows slot moves and failovers), or a ``redis://`` URL with the mode
  set; redis-py's ``RedisCluster``;
- ``sentinel``: a master watched by Redis Sentinel,
  ``redis+sentinel://[:password@]host:port[,host:port…]/service[/db]`` (the sentinels'
  addresses and the monitored master's name); redis-py's ``Sentinel.master_for``, which
  asks the sentinels for the master again after a failover.

``parse_target`` is pure (tested without servers); ``connect`` builds the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from services.contract.errors import SettingsError
from services.contract.fast_redis import FastPool, FastRedis

Mode = Literal["standalone", "cluster", "sentinel"]
MODES: tuple[str, ...] = ("auto", "standalone", "cluster", "sentinel")
"""Values of ``AXON_REDIS_MODE``; ``auto`` (the default) goes by the URL's scheme."""

_SCHEMES: dict[str, tuple[Mode, str]] = {
    "redis": ("standalone", "redis"),
    "rediss": ("standalone", "rediss"),
    "unix": ("standalone", "unix"),
    "redis+cluster": ("cluster", "redis"),
    "rediss+cluster": ("cluster", "rediss"),
    "redis+sentinel": ("sentinel", "redis"),
    "rediss+sentinel": ("sentinel", "rediss"),
}


class RedisTargetError(SettingsError):
    """``AXON_REDIS_URL`` / ``AXON_REDIS_MODE`` do not describe a Redis to connect to."""


def parse_mode(raw: str) -> str:
    """An ``AXON_REDIS_MODE`` value, lower-cased; ``ValueError`` names the choices."""
    value = raw.strip().lower()
    if value not in MODES:
        raise ValueError(f"must be one of {', '.join(MODES)}")
    return value


@dataclass(frozen=True)
class RedisTarget:
    """Where Redis is. ``url`` is what redis-py's ``from_url`` takes (standalone: the URL
    as given; cluster: the seed node's; sentinel: the master's options, no host)."""

    mode: Mode
    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""


def parse_target(url: str, mode: str = "auto") -> RedisTarget:
    """The deployment ``url`` names, ``mode`` overriding the scheme's (see the module
    docstring). Raises ``RedisTargetError`` saying what to change."""
    if mode not in MODES:
        raise RedisTargetError(f"AXON_REDIS_MODE: {mode!r} is not one of {', '.join(MODES)}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise RedisTargetError(
            f"AXON_REDIS_URL: {url!r} needs one of the schemes "
            f"{', '.join(s + '://' for s in _SCHEMES)}"
        )
    implied, plain = _SCHEMES[scheme.lower()]
    chosen: Mode = implied if mode == "auto" else mode  # type: ignore[assignment]
    if chosen != "sentinel":
        return RedisTarget(chosen, f"{plain}://{rest}")
    return _sentinel_target(plain, rest)


def _sentinel_target(scheme: str, rest: str) -> RedisTarget:
    """``[user:password@]host:port[,host:port…]/service[/db]`` → a sentinel target."""
    parts = urlsplit(f"{scheme}://{rest}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    sentinels = []
    for address in hosts.split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise RedisTargetError(
                f"AXON_REDIS_URL: sentinel address {address!r} must be host:port "
                "(for example redis+sentinel://s1:26379,s2:26379/mymaster/0)"
            )
        sentinels.append((host.strip("[]"), int(port)))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise RedisTargetError(
            "AXON_REDIS_URL: a sentinel URL ends with /service[/db], the master's name as "
            "the sentinels monitor it (for example redis+sentinel://s1:26379/mymaster/0)"
        )
    db = path[1] if len(path) == 2 else "0"
    auth = f"{credentials}@" if credentials else ""
    return RedisTarget("sentinel", f"{scheme}://{auth}localhost/{db}", tuple(sentinels), path[0])


def connect(
    url: str,
    *,
    socket_timeout_s: float,
    connect_timeout_s: float,
    mode: str = "auto",
    retry_connection_errors: bool = True,
    fast: bool = True,
) -> Any:
    """A client (connection pool) for the Redis ``url`` and ``mode`` name
    (``Redis`` or ``RedisCluster``); connections open on first use.

    ``socket_timeout_s`` must exceed the longest blocking command the caller issues.
    Standalone and sentinel: a command that fails with a connection error is retried
    once, at once, on a fresh connection (after a Redis restart or a failover every
    pooled connection is stale and fails once, which must not look like an outage); a
    second failure is raised. A *timeout* is never retried there: the command may have
    run (an XADD re-sent after a timeout could queue a request twice), and a stalled
    Redis must not double the wait. Cluster: redis-py's cluster client retries
    connection errors, timeouts and moved slots three times with a backoff, rereading
    the slot map (a failover takes a node timeout or more); a timed-out enqueue may then
    be queued twice, which runs the request twice and answers it once.

    ``retry_connection_errors=False`` (standalone and sentinel): no retry at all, so a
    lost connection is always seen. The gateway's reply listeners use it: a restarted
    Redis may have lost every queued entry, and a blocking pop silently re-sent on a
    fresh connection would hide the restart from the requests waiting on it.

    ``fast`` (standalone, ``AXON_REDIS_FAST``): a ``fast_redis.FastRedis``, which sends
    the request path's commands over its own connections at about half redis-py's CPU
    per command, with the same retry and timeout rules; ``False``: redis-py's path for
    every command.
    """
    target = parse_target(url, mode)
    if target.mode == "cluster":
        return RedisCluster.from_url(
            target.url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),  # type: ignore[arg-type]  # stale types-redis stubs
        )
    once = Retry(
        NoBackoff(), 1 if retry_connection_errors else 0, supported_errors=(RedisConnectionError,)
    )
    if target.mode == "sentinel":
        options = Redis.from_url(target.url).connection_pool.connection_kwargs  # the URL's
        sentinel = Sentinel(
            list(target.sentinels),
            # the sentinels themselves are asked without a password
            sentinel_kwargs={"socket_timeout": connect_timeout_s},
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
        )
        return sentinel.master_for(
            target.service,
            redis_class=Redis,
            db=options.get("db", 0),
            retry=once,
            retry_on_error=[RedisConnectionError],
            retry_on_timeout=False,
            **_auth(options),
        )
    client = (FastRedis if fast else Redis).from_url(
        target.url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=once,
        retry_on_error=[RedisConnectionError],
        retry_on_timeout=False,
    )
    if isinstance(client, FastRedis):
        client.fast = FastPool(
            target.url,
            socket_timeout_s=socket_timeout_s,
            connect_timeout_s=connect_timeout_s,
            retries=1 if retry_connection_errors else 0,
        )
    return client


def _auth(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The username/password among the URL's parsed connection options (the master's)."""
    return {k: kwargs[k] for k in ("username", "password") if kwargs.get(k)}


async def close(client: Any) -> None:
    """Close a client from ``connect`` and everything it opened: its pool (every node's
    on a cluster) and, behind Sentinel, its connections to the sentinels."""
    await client.aclose()
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    if isinstance(manager, Sentinel):
        await manager.aclose()  # type: ignore[attr-defined]  # stale types-redis stubs
