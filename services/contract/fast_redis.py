"""The hot commands' short path to one Redis server: RESP2 over an asyncio protocol with
hiredis, under redis-py's own client class.

Why: redis-py 8's asyncio client spends 1.8–2.3× the CPU per command of the same round
trip written and parsed here (its connection pool lock, retry and observability
wrappers, its stream reader; ``make bench-redis-client``), and a lone request crosses four
such commands on its critical path (the gateway's enqueue script and reply pop, the
worker's read and completion script). ``docs/decisions.md``, "The hot commands' own
connections", has the figures.

``FastRedis`` is a ``redis.asyncio.Redis``: every command keeps redis-py's path except
the few in ``HOT`` (the scripts, the stream read, the list pops), which go over
``FastPool``'s connections and come back through the same response callbacks and the
same exception classes (``BaseParser.parse_error``), so callers cannot tell the two
apart. These connections speak RESP2 and take redis-py's RESP2 callbacks
(``_get_response_callback``, private to redis-py 8, hence its pin in pyproject.toml):
the shapes its RESP3 connections convert their replies to. Pipelines, pub/sub and every
other command stay redis-py's.

Semantics kept from ``redis_client.connect``'s client: a connection error is retried
``retries`` times at once on a fresh connection (the command may have run: the same
rule as redis-py's ``Retry``); a timeout (``socket_timeout_s`` without an answer, which
must cover a blocking command's own time, as on redis-py's path) is never retried and
closes that connection; a cancelled call closes its connection (its answer would
otherwise be read as the next command's).

One call in flight per connection (a blocking pop holds its own): one command, or a
pipeline of several in one write (``FastRedis.pipelined``: the worker's completion
script with its next stream read; docs/decisions.md, "One write for a batch's answers
and the next read"). Idle connections kept for reuse; connections open on first use,
with AUTH and SELECT as the URL says, TLS for ``rediss://`` with redis-py's own
``SSLContext`` from the URL's ``ssl_*`` options, or a unix socket.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis._parsers import BaseParser
from redis._parsers.response_callbacks import _get_response_callback
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

HOT = frozenset({"EVALSHA", "EVAL", "XREADGROUP", "BLMPOP", "BLPOP", "LPOP"})
"""The commands ``FastRedis`` sends itself: those of every request's path."""

_SPECIAL_OPTIONS = frozenset({"NEVER_DECODE", "EMPTY_RESPONSE"})
"""redis-py options that change how it reads a reply: such a call stays on redis-py."""

Arg = bytes | str | int | float


class _Connection(asyncio.Protocol):
    """One RESP2 connection, one caller at a time (``FastPool`` sees to it), whose
    commands go out in one write (``call_many``: a pipeline).

    ``call_many`` returns the replies in order (bytes, int, list, None; a Redis error
    reply as an instance of redis-py's exception class for it, not raised) or raises: a
    lost connection as ``ConnectionError``, no reply within ``timeout_s`` as
    ``TimeoutError`` (the connection is then closed).
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[list[Any]] | None = None
        self._expected = 0
        self._replies: list[Any] = []
        self._sent_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiter = self._waiter
        while True:
            try:
                reply = self._reader.gets()
            except InvalidResponse as exc:
                self._fail(RedisConnectionError(f"Protocol error: {exc}"))
                return
            if reply is False:
                return
            if waiter is None or waiter.done() or len(self._replies) >= self._expected:
                # an answer nobody waits for: out of step with the server
                self._fail(RedisConnectionError("Redis sent a reply no command waited for"))
                return
            if isinstance(reply, ResponseError):
                reply = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
            self._replies.append(reply)
            if len(self._replies) == self._expected:
                self._waiter = None
                replies, self._replies = self._replies, []
                waiter.set_result(replies)
                waiter = None  # anything more in this read is out of step

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._reject(RedisConnectionError("Connection closed by server."))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- commands
    async def call(self, args: Sequence[Arg]) -> Any:
        """Send one command and wait for its reply; a Redis error reply is raised."""
        (reply,) = await self.call_many([args])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def call_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send ``commands`` in one write and wait for all their replies (see the class
        docstring). A cancelled call closes the connection (its answers would otherwise
        be read as the next call's)."""
        if self.closed or self._transport is None:
            raise RedisConnectionError("Connection closed.")
        waiter: asyncio.Future[list[Any]] = self._loop.create_future()
        self._waiter = waiter
        self._expected = len(commands)
        self._replies = []
        self._sent_at = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(self._sent_at + self._timeout_s, self._check)
        packed = [hiredis.pack_command(tuple(args)) for args in commands]  # type: ignore[arg-type]
        self._transport.write(packed[0] if len(packed) == 1 else b"".join(packed))
        try:
            return await waiter
        except asyncio.CancelledError:
            self.close()
            raise

    def _check(self) -> None:
        """The watchdog: one timer per connection, re-armed while a command waits."""
        self._timer = None
        if self._waiter is None or self.closed:
            return
        due = self._sent_at + self._timeout_s
        if self._loop.time() >= due:
            self._fail(RedisTimeoutError("Timeout reading from socket"))
        else:
            self._timer = self._loop.call_at(due, self._check)

    def _fail(self, error: Exception) -> None:
        self._reject(error)
        self.close()

    def _reject(self, error: Exception) -> None:
        """The call in flight, if any, fails with ``error``."""
        waiter, self._waiter = self._waiter, None
        self._replies = []
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class FastPool:
    """Connections to the server ``url`` names (``redis://``, ``rediss://``, ``unix://``),
    one per command in flight. ``retries``: how often a connection error is retried."""

    def __init__(
        self, url: str, *, socket_timeout_s: float, connect_timeout_s: float, retries: int
    ) -> None:
        self._options: dict[str, Any] = dict(parse_url(url))
        self._socket_timeout_s = socket_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._retries = retries
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None
        """``rediss://``: redis-py's context from the URL's ``ssl_*`` options, built at
        the first connection (it reads the certificate files) and kept."""

    async def call(self, args: Sequence[Arg]) -> Any:
        """The raw RESP2 reply to ``args`` (see ``_Connection``); a Redis error is raised."""
        (reply,) = await self.call_many([args])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def call_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """The raw RESP2 replies to ``commands``, sent in one write on one connection;
        a Redis error reply comes back as its exception, in its place (see
        ``_Connection.call_many``). A connection error retries them all."""
        attempt = 0
        while True:
            connection = await self._acquire()
            try:
                replies = await connection.call_many(commands)
            except BaseException as exc:  # the connection is in no state to be reused
                self._open.discard(connection)
                connection.close()
                if not isinstance(exc, RedisConnectionError) or attempt >= self._retries:
                    raise
                attempt += 1
                continue
            self._idle.append(connection)
            return replies

    async def _acquire(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
            self._open.discard(connection)
        connection = await self._connect()
        self._open.add(connection)
        return connection

    async def _connect(self) -> _Connection:
        options = self._options
        loop = asyncio.get_running_loop()
        connection = _Connection(self._socket_timeout_s)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                kind = options.get("connection_class")
                if kind is UnixDomainSocketConnection:
                    await loop.create_unix_connection(lambda: connection, options["path"])
                else:
                    if kind is SSLConnection and self._ssl is None:
                        tls = {k: v for k, v in options.items() if k.startswith("ssl_")}
                        self._ssl = SSLConnection(**tls).ssl_context.get()
                    await loop.create_connection(
                        lambda: connection,
                        options.get("host", "localhost"),
                        options.get("port", 6379),
                        ssl=self._ssl,
                    )
        except TimeoutError as exc:
            connection.close()
            raise RedisTimeoutError("Timeout connecting to server") from exc
        except OSError as exc:
            connection.close()
            raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
        try:
            if options.get("password"):
                user = [options["username"]] if options.get("username") else []
                await connection.call(["AUTH", *user, options["password"]])
            if int(options.get("db", 0)):
                await connection.call(["SELECT", int(options["db"])])
        except BaseException:
            connection.close()
            raise
        return connection

    def close(self) -> None:
        """Close every connection (a command in flight fails with ``ConnectionError``)."""
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()


class _Resp2:
    """What redis-py's callback choice asks of a connection: this one speaks RESP2 (redis-py
    8 negotiates RESP3 and converts replies to the RESP2 shapes, ``legacy_responses``)."""

    _resp2_fallback = True
    legacy_responses = True


class FastRedis(Redis):  # type: ignore[type-arg]  # stale types-redis stubs
    """redis-py's client with the ``HOT`` commands sent over ``fast`` (module docstring).
    Built by ``redis_client.connect`` for one server (standalone mode)."""

    fast: FastPool | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0]
        fast = self.fast
        if (
            fast is None
            or name not in HOT
            or self.connection is not None
            or not _SPECIAL_OPTIONS.isdisjoint(options)
        ):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        response = await fast.call(args)
        options.pop("keys", None)
        callback = _get_response_callback(self.response_callbacks, name, _Resp2)
        return response if callback is None else callback(response, **options)

    async def pipelined(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Each of ``commands`` (``HOT`` ones: e.g. a completion script and the next
        stream read) answered as ``execute_command`` would, a Redis error as its
        exception in its place, not raised. Over ``fast``: one write and one round trip
        for all; otherwise one command after the other."""
        fast = self.fast
        if fast is None or self.connection is not None or any(c[0] not in HOT for c in commands):
            answers: list[Any] = []
            for command in commands:
                try:
                    answers.append(await self.execute_command(*command))
                except ResponseError as exc:
                    answers.append(exc)
            return answers
        replies = await fast.call_many(commands)
        for index, (command, reply) in enumerate(zip(commands, replies, strict=True)):
            if not isinstance(reply, Exception):
                callback = _get_response_callback(self.response_callbacks, str(command[0]), _Resp2)
                if callback is not None:
                    replies[index] = callback(reply)
        return replies

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.fast is not None:
            self.fast.close()
        await super().aclose(close_connection_pool)  # type: ignore[misc]
