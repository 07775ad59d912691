"""Real Redis helpers for tests: a private server, clients, and a polling deadline helper.

Tests never touch a Redis they did not start (never 127.0.0.1:6379).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from services.runtime.redis_server import RedisServer

T = TypeVar("T")

__all__ = ["RedisServer", "wait_for", "wait_for_async"]


def wait_for(predicate: Callable[[], T], *, timeout_s: float = 30.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout_s``.

    Used only to wait on real processes; it asserts nothing about speed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


async def wait_for_async(
    predicate: Callable[[], Awaitable[T]], *, timeout_s: float = 30.0, what: str = "condition"
) -> T:
    """Async ``wait_for``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)
