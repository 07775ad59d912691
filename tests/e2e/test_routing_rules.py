"""Routing rules across gateway processes: two real gateways (``python -m
services.gateway``) on one Redis, with the ``axon serve`` stack's workers. A rule PUT on
one is applied by the other within a second (its registry refresh, 500 ms here as by
default); a DELETE likewise; every inference answer names its version."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from tests.e2e.conftest import Stack
from tests.e2e.payloads import infer_image

ADMIN = "admin-key-e2e-0001"
ROUTING = "/v1/models/digits-cnn/routing"
RULE = {"weights": {"1": 100}, "sticky_header": "X-User-Id"}


def seconds_until(http: httpx.Client, rule: dict[str, Any] | None, limit_s: float = 5.0) -> float:
    """Poll ``http``'s GET routing every 20 ms until it shows ``rule``; the seconds it took."""
    started = time.monotonic()
    while True:
        shown = http.get(ROUTING).json()["rule"]
        elapsed = time.monotonic() - started
        if shown == rule:
            return elapsed
        assert elapsed < limit_s, f"still {shown!r} after {limit_s} s"
        time.sleep(0.02)


def test_a_rule_put_on_one_gateway_applies_on_another_within_a_second(
    stack: Stack, start_gateway: Callable[[Mapping[str, str]], str]
) -> None:
    settings = {"AXON_GRPC_PORT": "0", "AXON_REGISTRY_REFRESH_MS": "500", "AXON_ADMIN_KEYS": ADMIN}
    first, second = start_gateway(settings), start_gateway(settings)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with (
        httpx.Client(base_url=first, timeout=30) as a,
        httpx.Client(base_url=second, timeout=30) as b,
    ):
        try:
            assert b.get(ROUTING).json()["rule"] is None
            assert a.put(ROUTING, json=RULE).status_code == 401  # admin keys are set
            stored = a.put(ROUTING, json=RULE, headers=admin)
            assert stored.status_code == 200, stored.text
            assert stored.json()["effective_percent"] == {"1": 100.0}
            applied_s = seconds_until(b, RULE)
            print(f"rule PUT on one gateway seen by the other after {applied_s * 1000:.0f} ms")
            assert applied_s < 1.0
            answer = b.post(
                "/v2/models/digits-cnn/infer", json=infer_image(1), headers={"X-User-Id": "u1"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-axon-model-version"] == answer.json()["model_version"] == "1"
            refused = b.put(ROUTING, json={"weights": {"7": 1}}, headers=admin)
            assert refused.status_code == 400 and "weights.7" in refused.json()["error"]
            assert b.delete(ROUTING, headers=admin).status_code == 200
            cleared_s = seconds_until(a, None)
            print(f"rule DELETE seen by the other gateway after {cleared_s * 1000:.0f} ms")
            assert cleared_s < 1.0
        finally:
            a.delete(ROUTING, headers=admin)  # the session's Redis is shared by other tests
