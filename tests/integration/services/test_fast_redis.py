"""``fast_redis.FastRedis`` against real Redis servers: the hot commands answer exactly
as redis-py's path does (values, exception classes), and its own connections keep the
client's rules when the server stalls, restarts, or a call is cancelled."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

from services.contract import redis_client
from services.contract.fast_redis import HOT, FastRedis
from tests.support.redis import RedisServer


@asynccontextmanager
async def clients(url: str, **options: Any) -> AsyncIterator[tuple[FastRedis, Redis[bytes]]]:
    """The fast client and redis-py's plain one on ``url``, same options."""
    settings: dict[str, Any] = {"socket_timeout_s": 5.0, "connect_timeout_s": 5.0, **options}
    fast = redis_client.connect(url, **settings)
    plain = redis_client.connect(url, fast=False, **settings)
    assert isinstance(fast, FastRedis) and not isinstance(plain, FastRedis)
    try:
        yield fast, plain
    finally:
        await fast.aclose()
        await plain.aclose()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def test_hot_commands_answer_as_redis_py_does(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with clients(redis_server.url) as (fast, plain):
            await plain.delete("fr:s", "fr:l", "fr:str")
            for n in range(3):
                await plain.xadd("fr:s", {"id": f"r{n}", "body": bytes([n, 0, 255])})
            await plain.xgroup_create("fr:s", "g", id="0")
            await plain.rpush("fr:l", *[f"v{n}" for n in range(6)])
            await plain.set("fr:str", "x")
            script = (
                "return {KEYS[1], tonumber(ARGV[1]) + 1, {ARGV[2]}, redis.call('LLEN', KEYS[1])}"
            )
            assert {"XREADGROUP", "EVALSHA", "BLMPOP"} <= HOT
            read_fast = await fast.execute_command(
                "XREADGROUP", "GROUP", "g", "a", "COUNT", 2, "STREAMS", "fr:s", ">"
            )
            read_plain = await plain.execute_command(
                "XREADGROUP", "GROUP", "g", "b", "COUNT", 2, "STREAMS", "fr:s", ">"
            )
            # the same shape: [[stream, [(id, {field: value})]]], one entry left for b
            assert len(read_fast[0][1]) == 2 and len(read_plain[0][1]) == 1
            assert read_fast[0][0] == read_plain[0][0] == b"fr:s"
            assert type(read_fast[0][1][0]) is type(read_plain[0][1][0])
            assert read_fast[0][1][0][1] == {b"id": b"r0", b"body": b"\x00\x00\xff"}
            assert read_plain[0][1][0][1] == {b"id": b"r2", b"body": b"\x02\x00\xff"}
            empty = ["XREADGROUP", "GROUP", "g", "a", "COUNT", 2, "STREAMS", "fr:s", ">"]
            assert await fast.execute_command(*empty) == await plain.execute_command(*empty)
            assert await fast.eval(script, 1, "fr:l", 41, "é") == await plain.eval(
                script, 1, "fr:l", 41, "é"
            )
            blmpop = ["BLMPOP", 0.5, 1, "fr:l", "LEFT", "COUNT", 2]
            assert await fast.execute_command(*blmpop) == [b"fr:l", [b"v0", b"v1"]]
            assert await plain.execute_command(*blmpop) == [b"fr:l", [b"v2", b"v3"]]
            assert await fast.blpop(["fr:l"], timeout=1) == (b"fr:l", b"v4")
            assert await plain.blpop(["fr:l"], timeout=1) == (b"fr:l", b"v5")
            assert await fast.lpop("fr:none") is None
            assert await fast.lpop("fr:l", 5) is None and await plain.lpop("fr:l", 5) is None
            assert await fast.execute_command("BLMPOP", 0.05, 1, "fr:none", "LEFT") is None
            for client in (fast, plain):
                with pytest.raises(NoScriptError):
                    await client.evalsha("0" * 40, 0)
                with pytest.raises(ResponseError, match="WRONGTYPE"):
                    await client.execute_command("LPOP", "fr:str")
                with pytest.raises(ResponseError, match="NOGROUP"):
                    await client.execute_command(
                        "XREADGROUP", "GROUP", "nope", "a", "STREAMS", "fr:s", ">"
                    )
            # every other command is redis-py's, on the same client
            assert await fast.get("fr:str") == b"x"
            async with fast.pipeline(transaction=False) as pipe:
                assert await pipe.get("fr:str").llen("fr:none").execute() == [b"x", 0]
            await plain.delete("fr:s", "fr:l", "fr:str")

    run(scenario)


def test_a_pipeline_answers_each_command_as_alone_an_error_in_its_place(
    redis_server: RedisServer,
) -> None:
    """``FastRedis.pipelined`` (one write, one round trip): every command's answer is what
    ``execute_command`` gives, a Redis error reply is returned in its place (the others
    still run): the same list as redis-py's client (``fast=False``) one command after
    the other; a cancelled pipeline leaves no answer to the next call."""

    async def scenario() -> None:
        async with clients(redis_server.url) as (fast, plain):
            answers: dict[str, list[Any]] = {}
            client: Any
            for name, client in (("fast", fast), ("plain", plain)):
                await plain.delete("fr:p")
                await plain.xadd("fr:p", {"n": "1"})
                await plain.xgroup_create("fr:p", "g", id="0")
                commands = [
                    ["EVALSHA", "0" * 40, 0],  # no such script
                    ["EVAL", "return redis.call('XLEN', KEYS[1])", 1, "fr:p"],
                    ["XREADGROUP", "GROUP", "g", "c", "COUNT", 5, "STREAMS", "fr:p", ">"],
                ]
                if client is fast:
                    answers[name] = await fast.pipelined(commands)
                    continue
                answers[name] = []
                for command in commands:
                    try:
                        answers[name].append(await client.execute_command(*command))
                    except ResponseError as exc:
                        answers[name].append(exc)
            for got in answers.values():
                assert isinstance(got[0], NoScriptError)
                assert got[1] == 1
                ((stream, ((_id, fields),)),) = got[2]
                assert stream == b"fr:p" and fields == {b"n": b"1"}
            assert [type(a) for a in answers["fast"]] == [type(a) for a in answers["plain"]]
            blocked = asyncio.create_task(
                fast.pipelined([["LPOP", "fr:none"], ["BLMPOP", 5, 1, "fr:pb", "LEFT"]])
            )
            await asyncio.sleep(0.1)
            blocked.cancel()
            with pytest.raises(asyncio.CancelledError):
                await blocked
            await plain.rpush("fr:pb", "for-nobody")
            assert await fast.pipelined([["LPOP", "fr:other"]]) == [None]
            assert await plain.lpop("fr:pb") == b"for-nobody"

    run(scenario)


def test_a_stalled_server_times_out_and_is_used_again_once_back() -> None:
    async def scenario() -> None:
        with RedisServer() as server:
            async with clients(server.url, socket_timeout_s=0.5) as (fast, _plain):
                assert await fast.lpop("k") is None
                assert server.pid is not None
                os.kill(server.pid, signal.SIGSTOP)
                try:
                    started = asyncio.get_running_loop().time()
                    with pytest.raises(TimeoutError):
                        await fast.lpop("k")
                    waited = asyncio.get_running_loop().time() - started
                    # one socket timeout (0.5 s): a timeout is never retried, which would
                    # have doubled the wait
                    assert 0.45 < waited < 0.95, waited
                finally:
                    os.kill(server.pid, signal.SIGCONT)
                # the timed-out connection was closed, not reused out of step
                await fast.execute_command("EVAL", "redis.call('RPUSH', 'k', 'v') return 1", 0)
                assert await fast.lpop("k") == b"v"

    run(scenario)


def test_a_blocking_pop_waits_its_time_within_the_socket_timeout(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        async with clients(redis_server.url, socket_timeout_s=1.0) as (fast, plain):
            pop = asyncio.create_task(fast.execute_command("BLMPOP", 0.6, 1, "fr:b", "LEFT"))
            await asyncio.sleep(0.2)
            assert not pop.done()
            await plain.rpush("fr:b", "late")
            assert await pop == [b"fr:b", [b"late"]]
            # two pops in flight at once: each has its own connection
            pops = [fast.execute_command("BLMPOP", 2, 1, f"fr:b{n}", "LEFT") for n in range(2)]
            tasks = [asyncio.create_task(p) for p in pops]
            await asyncio.sleep(0.1)
            await plain.rpush("fr:b1", "one")
            await plain.rpush("fr:b0", "zero")
            assert await asyncio.gather(*tasks) == [[b"fr:b0", [b"zero"]], [b"fr:b1", [b"one"]]]

    run(scenario)


def test_a_cancelled_call_does_not_leave_its_answer_to_the_next(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        async with clients(redis_server.url) as (fast, plain):
            pop = asyncio.create_task(fast.execute_command("BLMPOP", 5, 1, "fr:c", "LEFT"))
            await asyncio.sleep(0.1)
            pop.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pop
            await plain.rpush("fr:c", "for-nobody")
            await asyncio.sleep(0.1)
            # the cancelled pop's connection is gone: the entry stays, the next call is its own
            assert await fast.execute_command("LPOP", "fr:other") is None
            assert await plain.lpop("fr:c") == b"for-nobody"

    run(scenario)


def test_a_restart_fails_the_call_in_flight_and_the_next_reconnects() -> None:
    async def scenario() -> None:
        server = RedisServer().start()
        try:
            async with clients(server.url) as (fast, _plain):
                no_retry = redis_client.connect(
                    server.url,
                    socket_timeout_s=5,
                    connect_timeout_s=5,
                    retry_connection_errors=False,
                )
                pop = asyncio.create_task(no_retry.execute_command("BLMPOP", 5, 1, "k", "LEFT"))
                assert await fast.lpop("k") is None  # a pooled connection, idle now
                await asyncio.sleep(0.1)
                port = server.port
                server.stop()
                with pytest.raises(ConnectionError):
                    await pop
                server = RedisServer(port=port).start()
                # the idle connection died with the server: a fresh one serves the next call
                assert await fast.lpop("k") is None
                assert await no_retry.execute_command("LPOP", "k") is None
                await no_retry.aclose()
        finally:
            server.stop()

    run(scenario)


def test_auth_and_database_come_from_the_url_and_wrong_credentials_are_refused() -> None:
    async def scenario() -> None:
        with RedisServer() as server:
            admin = Redis.from_url(server.url)
            await admin.config_set("requirepass", "s3cret")
            await admin.aclose()
            url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
            async with clients(url) as (fast, plain):
                await plain.rpush("k", "in-db-3")
                assert await fast.lpop("k") == b"in-db-3"
                await plain.rpush("k", "again")
            other = redis_client.connect(
                f"redis://127.0.0.1:{server.port}/0", socket_timeout_s=5, connect_timeout_s=5
            )
            with pytest.raises(AuthenticationError):
                await other.lpop("k")
            await other.aclose()
            wrong = redis_client.connect(
                f"redis://:nope@127.0.0.1:{server.port}/3", socket_timeout_s=5, connect_timeout_s=5
            )
            with pytest.raises(AuthenticationError):
                await wrong.lpop("k")
            await wrong.aclose()

    run(scenario)


def test_a_unix_socket_url(tmp_path: Any) -> None:
    async def scenario() -> None:
        path = tmp_path / "redis.sock"
        with RedisServer(extra_args=["--unixsocket", str(path)]):
            async with clients(f"unix://{path}?db=2") as (fast, plain):
                await plain.rpush("k", "over-the-socket")
                assert await fast.execute_command("LPOP", "k") == b"over-the-socket"

    run(scenario)


def test_a_connection_lost_under_a_call_is_retried_once_on_a_fresh_one(
    redis_server: RedisServer,
) -> None:
    """The pooled connection dies as the command goes out (its socket aborted before
    the loop saw it close): the default client re-sends on a fresh connection; the reply
    listeners' client (``retry_connection_errors=False``) raises."""

    async def scenario() -> None:
        for retries, expect_error in ((True, False), (False, True)):
            client = redis_client.connect(
                redis_server.url,
                socket_timeout_s=5,
                connect_timeout_s=5,
                retry_connection_errors=retries,
            )
            assert isinstance(client, FastRedis) and client.fast is not None
            assert await client.lpop("fr:r") is None  # one pooled connection, idle now
            (pooled,) = client.fast._idle
            assert pooled._transport is not None
            pooled._transport.abort()  # its close is seen on the loop's next turn
            assert not pooled.closed
            if expect_error:
                with pytest.raises(ConnectionError):
                    await client.lpop("fr:r")
            else:
                assert await client.lpop("fr:r") is None
                (fresh,) = client.fast._idle
                assert fresh is not pooled and pooled.closed
            await client.aclose()

    run(scenario)
