"""Fuzz the live gateway (real Redis, real workers) from its own OpenAPI description with
schemathesis: every operation, schema-valid and schema-violating inputs. The model path
parameter is narrowed to the served models plus an unknown one, so most requests reach
validation and the workers instead of stopping at 404. Whatever is sent, the answer is a
response below 500 within the client timeout (no crash, no hang), and the gateway is
still ready afterwards.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from services.gateway import openapi
from tests.security.conftest import MODELS, SecurityStack
from tests.support.redis import wait_for

REQUEST_TIMEOUT_S = 30.0
"""A response slower than this counts as a hang (deadlines are 5 s here)."""
EXAMPLES = int(os.environ.get("AXON_FUZZ_EXAMPLES", "40"))
"""Examples per operation and generation mode (17 operations × 2 modes)."""


@pytest.fixture(scope="module")
def fuzz_url(stack: SecurityStack) -> str:
    url = stack.gateway("sec-fuzz", timeout_ms="5000", max_rows="16").url
    # Readiness also needs the reply listener's first BLPOP round (AXON_REPLY_BLOCK_S).
    wait_for(
        lambda: httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200,
        timeout_s=30,
        what="gateway ready",
    )
    return url


def _narrow(original: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(original)  # spec() shares parameter objects between paths
    for item in spec["paths"].values():
        for parameter in item.get("parameters", []):
            if parameter["name"] == "model":
                parameter["schema"] = {"type": "string", "enum": [*MODELS, "no-such-model"]}
            elif parameter["name"] == "version":
                parameter["schema"] = {"type": "string", "enum": ["1", "7", "latest", "x"]}
    return spec


SCHEMA = schemathesis.openapi.from_dict(_narrow(openapi.spec()))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]  # type: ignore[union-attr]
CASES = [
    pytest.param(op, mode, id=f"{op.label} {mode.value}")
    for op in OPERATIONS
    for mode in GenerationMode
    # Negative cases need something to break: a parameter or a body.
    if mode is GenerationMode.POSITIVE or "{" in op.path or op.method.upper() == "POST"
]
"""Built from the same ``spec()`` the gateway serves (checked below). (schemathesis'
lazy pytest fixture does not work with pytest 9, so each operation's hypothesis
strategy is driven directly.)"""


def test_served_openapi_is_the_fuzzed_one(fuzz_url: str) -> None:
    assert httpx.get(f"{fuzz_url}/openapi.json", timeout=30).json() == openapi.spec()


@pytest.mark.parametrize(("operation", "mode"), CASES)
def test_no_server_error(operation: Any, mode: GenerationMode, fuzz_url: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=fuzz_url, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code < 500, (
            case.method,
            case.formatted_path,
            case.body,
            response.text[:300],
        )
        if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
            assert set(response.json()) == {"error"}, response.text[:300]
            assert "Traceback" not in response.text

    check()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"inputs": ' * 50_000 + b"1" + b"}" * 50_000,
        b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1,1,8,8], "data": '
        + b"[" * 5_000
        + b"]" * 5_000
        + b"}]}",
    ],
    ids=["deep-array", "deep-object", "deep-data"],
)
def test_deeply_nested_json(fuzz_url: str, body: bytes) -> None:
    """JSON nested deeper than Python's recursion limit must be a 400, not a 500."""
    for path in ("/v2/models/digits-cnn/infer", "/v1/models/digits-cnn/classify"):
        response = httpx.post(fuzz_url + path, content=body, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 400, (path, response.status_code, response.text[:200])


def test_still_ready_after_fuzzing(fuzz_url: str) -> None:
    assert httpx.get(f"{fuzz_url}/v2/health/ready", timeout=30).status_code == 200
