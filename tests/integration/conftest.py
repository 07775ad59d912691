"""Integration fixtures: a session-scoped private Redis server on a free port, and a
private three-master Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.runtime.redis_cluster import LocalRedisCluster
from tests.support.redis import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server started for this test session (never 127.0.0.1:6379)."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A real Redis Cluster (three masters, ``redis-server --cluster-enabled yes`` on free
    ports) started for this test session."""
    with LocalRedisCluster(masters=3) as cluster:
        yield cluster
