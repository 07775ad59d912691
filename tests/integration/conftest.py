"""Integration fixtures, session-scoped and private, on free ports: a Redis server, a
three-master Redis Cluster, and a master + replica watched by a Redis Sentinel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.runtime.redis_cluster import LocalRedisCluster, LocalSentinel
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


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[LocalSentinel]:
    """A real master with one replica and a Redis Sentinel watching them."""
    with LocalSentinel(replicas=1) as sentinel:
        yield sentinel
