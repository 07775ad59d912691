"""``CoalescingTransport`` on a recording transport and a real event loop: the writes of
one loop turn go out as one, ``close`` sends what is held first, and nothing is written
to a closed connection."""

from __future__ import annotations

import asyncio
from typing import Any

from services.gateway.write_coalescer import CoalescingTransport


class Recording(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.buffered = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def run(scenario: Any) -> None:
    async def main() -> None:
        inner = Recording()
        await scenario(inner, CoalescingTransport(inner, asyncio.get_running_loop()))

    asyncio.run(main())


def test_writes_of_one_turn_become_one() -> None:
    async def scenario(inner: Recording, outer: CoalescingTransport) -> None:
        outer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        outer.write(memoryview(b"body"))
        outer.write(b"")  # nothing to send: no empty write either
        assert inner.writes == [] and outer.get_write_buffer_size() == 23
        await asyncio.sleep(0)
        assert inner.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        assert outer.get_write_buffer_size() == 0
        outer.writelines([b"a", b"b"])
        await asyncio.sleep(0)
        assert inner.writes[1:] == [b"ab"]
        inner.buffered = 7  # the wrapped transport's own buffer counts too
        outer.write(b"xyz")
        assert outer.get_write_buffer_size() == 10

    run(scenario)


def test_close_sends_what_is_held_first() -> None:
    async def scenario(inner: Recording, outer: CoalescingTransport) -> None:
        outer.write(b"408 ...")
        outer.close()
        assert inner.writes == [b"408 ..."] and inner.closed and outer.is_closing()
        outer.write(b"late")
        await asyncio.sleep(0)  # a write after close is dropped, as by the transport
        assert inner.writes == [b"408 ..."]

    run(scenario)


def test_abort_drops_what_is_held() -> None:
    async def scenario(inner: Recording, outer: CoalescingTransport) -> None:
        inner.abort = lambda: setattr(inner, "closed", True)  # type: ignore[method-assign]
        outer.write(b"never sent")
        outer.abort()
        await asyncio.sleep(0)
        assert inner.writes == [] and inner.closed
        assert outer.get_extra_info("peername") == ("127.0.0.1", 1)

    run(scenario)
