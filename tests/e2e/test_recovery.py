"""Redis restarted under a running stack: the gateway reports it (503, not ready), stays
live, and recovers by itself once Redis is back (the workers re-register)."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Stack
from tests.e2e.payloads import infer_image
from tests.support.redis import wait_for


def test_redis_restart(stack: Stack) -> None:
    with stack.client() as http:
        assert http.post("/v2/models/digits-cnn/infer", json=infer_image(1)).status_code == 200
        stack.redis.stop()
        try:
            wait_for(
                lambda: http.get("/healthz/ready").status_code == 503,
                timeout_s=30,
                what="gateway not ready without Redis",
            )
            down = http.post("/v2/models/digits-cnn/infer", json=infer_image(1))
            assert down.status_code == 503
            assert "Redis" in down.json()["error"]
            assert http.get("/v2/health/live").status_code == 200
            assert http.get("/v2/models/digits-cnn/ready").status_code == 503
        finally:
            stack.redis.start()
        wait_for(
            lambda: http.get("/healthz/ready").status_code == 200,
            timeout_s=60,
            what="gateway ready again",
        )

        def answered() -> httpx.Response | None:
            response = http.post("/v2/models/digits-cnn/infer", json=infer_image(1))
            return response if response.status_code == 200 else None

        wait_for(answered, timeout_s=60, what="inference through the restarted Redis")
    stack.wait_models_ready(timeout_s=60)
