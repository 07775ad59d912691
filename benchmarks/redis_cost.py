"""What a benchmark's requests cost Redis, read from the server itself: ``CONFIG
RESETSTAT`` before a measurement, then ``INFO commandstats`` and ``INFO cpu`` after.

Per request: commands (every call the gateway and the worker made, background ones
included: heartbeats, registry refreshes), and Redis CPU (user + system seconds of the
server process over the window). Redis runs commands on one thread, so
``1 / cpu per request`` is the request rate one node can carry with that thread busy
all the time: the projected capacity ``docs/scaling.md`` quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis


@dataclass
class RedisCost:
    """Redis' share of ``requests`` answered requests."""

    commands_per_request: float
    cpu_us_per_request: float
    by_command: dict[str, float] = field(default_factory=dict)
    """Calls per request of each command (``evalsha``, ``blmpop``, ``xreadgroup``…)."""

    @property
    def projected_requests_per_s(self) -> float:
        """Requests/s at which Redis' command thread would be busy all the time."""
        return 1e6 / self.cpu_us_per_request if self.cpu_us_per_request > 0 else float("inf")


class RedisMeter:
    """Reads the cost of the requests between ``start()`` and ``stop(requests)``, summed
    over the servers on ``ports`` (a cluster's masters; one port for one server)."""

    def __init__(self, *ports: int) -> None:
        self._clients = [redis.Redis(port=port, socket_timeout=10) for port in ports]
        self._cpu_s = 0.0

    def start(self) -> None:
        for client in self._clients:
            client.config_resetstat()
        self._cpu_s = self._cpu()

    def stop(self, requests: int) -> RedisCost:
        cpu_s = self._cpu() - self._cpu_s
        calls: dict[str, int] = {}
        for client in self._clients:
            for name, value in client.info("commandstats").items():
                if name in ("cmdstat_config", "cmdstat_info"):  # the meter's own
                    continue
                command = name.removeprefix("cmdstat_")
                calls[command] = calls.get(command, 0) + int(value["calls"])
        n = max(requests, 1)
        by_command = {
            name: count / n for name, count in sorted(calls.items(), key=lambda kv: -kv[1])
        }
        return RedisCost(sum(calls.values()) / n, cpu_s * 1e6 / n, by_command)

    def _cpu(self) -> float:
        total = 0.0
        for client in self._clients:
            info = client.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return total

    def close(self) -> None:
        for client in self._clients:
            client.close()
