"""Integration fixtures: a session-scoped private Redis server on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server started for this test session (never 127.0.0.1:6379)."""
    with RedisServer() as server:
        yield server
