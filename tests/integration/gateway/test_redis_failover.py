"""The gateway's transport through a Sentinel failover (a real master, replica and
sentinel): an entry accepted before the failover is answered after it, the waiting
request is not failed while the client finds the new master, and new entries go to the
new master. (Redis Cluster's failover under load: tests/e2e/test_redis_cluster.py.)"""

from __future__ import annotations

import asyncio

from services.contract import protocol, redis_client
from services.contract.codec import Reply
from services.contract.protocol import NewEntry, Outgoing, Refused
from services.gateway.transport_redis import RedisTransport
from services.runtime.redis_cluster import LocalSentinel


def test_an_entry_accepted_before_a_sentinel_failover_is_answered_after_it() -> None:
    async def scenario(sentinel: LocalSentinel) -> None:
        connect = {"socket_timeout_s": 5.0, "connect_timeout_s": 2.0}
        gateway = redis_client.connect(sentinel.url, **connect)
        worker = redis_client.connect(sentinel.url, **connect)
        transport = RedisTransport(gateway, "failover-gw", block_s=0.2, fail_on_loss=False)
        downs: list[None] = []
        receiving = asyncio.create_task(transport.receive(lambda: downs.append(None)))
        stream = protocol.stream_key("fo-model", 1)
        await protocol.ensure_group(worker, stream)

        async def submit(request_id: str) -> str:
            to = transport.reply_to("fo-model", 1)
            answer = await transport.submit(
                "fo-model", 1, NewEntry(request_id, to, 0, b"x", budget_ms=60_000),
                limit=100, maxlen=1000, byte_limit=2**30,
            )  # fmt: skip
            assert not isinstance(answer, Refused)
            return answer

        try:
            before = transport.replies.expect("before")
            await submit("before")
            (taken,) = await protocol.read_entries(worker, stream, "w", count=1, block_ms=1000)
            old_master = sentinel.master_port()
            new_master = await asyncio.to_thread(sentinel.failover)
            assert new_master != old_master
            # The worker answers on the new master (its pending entry was replicated).
            reply = Outgoing(taken.reply_to or "", Reply.failure("before", "internal", "ok"))
            for _ in range(100):  # the first commands may meet the demoted master
                try:
                    done = await protocol.complete(
                        worker, stream, [(reply, taken.entry_id)], reply_ttl_s=60
                    )
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            assert done == 1
            answered = await asyncio.wait_for(before, 20.0)
            assert answered.error is not None and answered.error.message == "ok"
            after = transport.replies.expect("after")
            await submit("after")
            (late,) = await protocol.read_entries(worker, stream, "w", count=1, block_ms=1000)
            reply = Outgoing(late.reply_to or "", Reply.failure("after", "internal", "late"))
            await protocol.complete(worker, stream, [(reply, late.entry_id)], reply_ttl_s=60)
            assert (await asyncio.wait_for(after, 20.0)).error is not None
        finally:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
            await transport.aclose()
            await redis_client.close(worker)

    with LocalSentinel(replicas=1) as sentinel:
        asyncio.run(scenario(sentinel))
