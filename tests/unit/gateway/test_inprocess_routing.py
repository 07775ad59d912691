"""Weighted routing (canary) in-process: the real app on the memory queue with two
versions of the tiny classifier, each served by a real ONNX Runtime worker. Weights over
2,000 requests (a seeded draw: the counts are the same on every run), skipped versions
with no worker, the sticky header, exact versioned paths (REST, task endpoints, gRPC),
a rule written by another gateway applied at the registry refresh, the admin API's keys
and its 400s."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from services.gateway.oip_pb import grpc_service_pb2 as pb
from services.gateway.oip_pb import grpc_service_pb2_grpc as pb_grpc
from services.gateway.transport import TransportError
from services.runtime.redis_server import free_port
from tests.support.inprocess import CLASSIFIER, FORECASTER, GENERATOR, Stack, infer_image, stack

INFER = f"/v2/models/{CLASSIFIER}/infer"
CLASSIFY = f"/v1/models/{CLASSIFIER}/classify"
ROUTING = f"/v1/models/{CLASSIFIER}/routing"
HEADER = "X-Axon-Model-Version"
PIXELS = {"images": [[[0.0, 16.0], [8.0, 4.0]]]}
API, ADMIN = "api-key-0001", "admin-key-0001"


def two_versions(gw: Stack, *, serve: tuple[int, ...] = (1, 2)) -> None:
    for version in serve:
        gw.serve(CLASSIFIER, version)


def answered(response: Any) -> str:
    """The version that answered, from the header (and the body, which must agree)."""
    assert response.status_code == 200, response.text
    body = response.json()
    version = str(body.get("model_version", body.get("version")))
    assert response.headers[HEADER] == version
    return version


def put(gw: Stack, rule: dict[str, Any], **headers: str) -> Any:
    return gw.client.put(ROUTING, json=rule, headers=headers)


def test_90_10_over_2000_requests_within_3_points(tmp_path: Path) -> None:
    with stack(tmp_path, classifier_versions=2, seed=1234) as gw:
        two_versions(gw)
        # No rule: today's behaviour, the highest ready version.
        assert answered(gw.client.post(INFER, json=infer_image(1))) == "2"
        described = put(gw, {"weights": {"1": 90, "2": 10}}).json()
        assert described["effective_weights"] == {"1": 90, "2": 10}
        assert described["effective_percent"] == {"1": 90.0, "2": 10.0}
        counts = Counter(answered(gw.client.post(INFER, json=infer_image(1))) for _ in range(2000))
        print(f"in-process 90/10 over 2000 requests: {dict(counts)}")
        assert abs(counts["1"] / 2000 - 0.90) <= 0.03
        assert abs(counts["2"] / 2000 - 0.10) <= 0.03
        tasks = Counter(answered(gw.client.post(CLASSIFY, json=PIXELS)) for _ in range(200))
        assert set(tasks) == {"1", "2"} and tasks["1"] > tasks["2"]
        metrics = gw.client.get("/metrics").text
        line = f'axon_routed_total{{model="{CLASSIFIER}",reason="weights",version="1"}}'
        assert line in metrics


def test_a_weight_to_a_version_with_no_worker_is_skipped(tmp_path: Path) -> None:
    with stack(tmp_path, classifier_versions=2, seed=1) as gw:
        two_versions(gw, serve=(1,))  # version 2 is known (repository) but has no worker
        described = put(gw, {"weights": {"1": 10, "2": 90}}).json()
        assert described["versions"] == [
            {"version": 1, "ready": True, "workers": 1},
            {"version": 2, "ready": False, "workers": 0},
        ]
        assert described["effective"] == "rule"
        assert described["effective_weights"] == {"1": 10}
        assert described["effective_percent"] == {"1": 100.0}
        assert {answered(gw.client.post(INFER, json=infer_image(1))) for _ in range(50)} == {"1"}
        # Every weighted version without a worker: the default, never a 503 from the rule.
        described = put(gw, {"weights": {"2": 100}}).json()
        assert described["effective"] == "no_ready_version"
        assert described["effective_weights"] == {"1": 100}
        assert answered(gw.client.post(INFER, json=infer_image(1))) == "1"
        assert answered(gw.client.post(CLASSIFY, json=PIXELS)) == "1"


def test_the_sticky_header_keeps_a_user_on_one_version(tmp_path: Path) -> None:
    with stack(tmp_path, classifier_versions=2, seed=5) as gw:
        two_versions(gw)
        put(gw, {"weights": {"1": 50, "2": 50}, "sticky_header": "X-User-Id"})
        seen: dict[str, set[str]] = {}
        for user in (f"user-{i}" for i in range(40)):
            for _ in range(5):
                response = gw.client.post(INFER, json=infer_image(1), headers={"x-user-id": user})
                seen.setdefault(user, set()).add(answered(response))
            task = gw.client.post(CLASSIFY, json=PIXELS, headers={"X-User-Id": user})
            seen[user].add(answered(task))
        assert all(len(versions) == 1 for versions in seen.values()), seen
        assert {next(iter(v)) for v in seen.values()} == {"1", "2"}  # users spread over both
        # Without the header: a draw per request, both versions over 100 requests.
        drawn = {answered(gw.client.post(INFER, json=infer_image(1))) for _ in range(100)}
        assert drawn == {"1", "2"}


def test_versioned_requests_stay_exact_over_rest_tasks_and_grpc(tmp_path: Path) -> None:
    port = free_port()
    with stack(
        tmp_path, {"AXON_GRPC_PORT": str(port)}, classifier_versions=2, seed=3
    ) as gw, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # fmt: skip
        two_versions(gw)
        put(gw, {"weights": {"2": 100}})
        versioned = f"/v2/models/{CLASSIFIER}/versions/1/infer"
        assert {answered(gw.client.post(versioned, json=infer_image(1))) for _ in range(20)} == {
            "1"
        }
        assert answered(gw.client.post(CLASSIFY, json={**PIXELS, "version": 1})) == "1"
        assert answered(gw.client.post(CLASSIFY, json=PIXELS)) == "2"
        put(gw, {"weights": {"1": 100}})
        assert answered(gw.client.post(INFER, json=infer_image(1))) == "1"
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def model_infer(version: str) -> tuple[str, str]:
            request = pb.ModelInferRequest(model_name=CLASSIFIER, model_version=version)
            tensor = request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 2])
            tensor.contents.fp32_contents.extend(np.arange(4, dtype=np.float32).tolist())
            response, call = stub.ModelInfer.with_call(request, timeout=10)
            trailing = dict(call.trailing_metadata() or ())
            return response.model_version, trailing["x-axon-model-version"]

        assert model_infer("") == ("1", "1")  # the rule
        assert model_infer("2") == ("2", "2")  # exact


def test_grpc_sticky_metadata_follows_the_rule(tmp_path: Path) -> None:
    port = free_port()
    with stack(
        tmp_path, {"AXON_GRPC_PORT": str(port)}, classifier_versions=2, seed=3
    ) as gw, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # fmt: skip
        two_versions(gw)
        put(gw, {"weights": {"1": 50, "2": 50}, "sticky_header": "X-User-Id"})
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for user in ("alice", "bob", "carol", "dave"):
            rest = answered(gw.client.post(INFER, json=infer_image(1), headers={"X-User-Id": user}))
            request = pb.ModelInferRequest(model_name=CLASSIFIER)
            tensor = request.inputs.add(name="image", datatype="FP32", shape=[1, 1, 2, 2])
            tensor.contents.fp32_contents.extend([0.0, 1.0, 2.0, 3.0])
            for _ in range(3):
                response = stub.ModelInfer(request, metadata=(("x-user-id", user),), timeout=10)
                assert response.model_version == rest  # same hash, same version


def test_a_rule_stored_by_another_gateway_applies_after_a_registry_refresh(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, classifier_versions=2, seed=9) as gw:
        two_versions(gw)

        async def store(raw: str | None) -> None:
            if raw is None:
                await gw.queue.delete_rule(CLASSIFIER)
            else:
                await gw.queue.put_rule(CLASSIFIER, raw)

        portal = gw.client.portal
        assert portal is not None
        portal.call(store, '{"weights": {"1": 1}, "sticky_header": null}')
        # Not yet: this gateway reads rules with its registry refresh (every 500 ms).
        assert answered(gw.client.post(INFER, json=infer_image(1))) == "2"
        gw.refresh()
        assert answered(gw.client.post(INFER, json=infer_image(1))) == "1"
        assert gw.client.get(ROUTING).json()["rule"] == {
            "weights": {"1": 1},
            "sticky_header": None,
        }
        # A stored value that is not a valid rule is ignored, as if there were none.
        portal.call(store, '{"weights": {"1": -5}}')
        gw.refresh()
        assert answered(gw.client.post(INFER, json=infer_image(1))) == "2"
        assert gw.client.get(ROUTING).json()["rule"] is None
        portal.call(store, '{"weights": {"1": 1}}')
        gw.refresh()
        assert answered(gw.client.post(INFER, json=infer_image(1))) == "1"
        portal.call(store, None)
        gw.refresh()
        assert answered(gw.client.post(INFER, json=infer_image(1))) == "2"


def test_admin_keys_guard_changes_and_api_keys_are_not_enough(tmp_path: Path) -> None:
    env = {"AXON_API_KEYS": API, "AXON_ADMIN_KEYS": ADMIN}
    with stack(tmp_path, env, classifier_versions=2) as gw:
        two_versions(gw)
        rule = {"weights": {"1": 1}}
        missing = put(gw, rule)
        assert missing.status_code == 401 and "admin key" in missing.json()["error"]
        assert put(gw, rule, **{"X-API-Key": "wrong-key-123"}).status_code == 401
        api_only = put(gw, rule, **{"X-API-Key": API})
        assert api_only.status_code == 403
        assert "needs an admin key (AXON_ADMIN_KEYS)" in api_only.json()["error"]
        assert gw.client.delete(ROUTING, headers={"X-API-Key": API}).status_code == 403
        assert put(gw, rule, Authorization=f"Bearer {ADMIN}").status_code == 200
        # Reading takes either key; nothing without one.
        assert gw.client.get(ROUTING, headers={"X-API-Key": API}).status_code == 200
        assert gw.client.get(ROUTING, headers={"X-API-Key": ADMIN}).status_code == 200
        assert gw.client.get(ROUTING).status_code == 401
        # An admin key is not an API key: inference still needs one.
        assert (
            gw.client.post(INFER, json=infer_image(1), headers={"X-API-Key": ADMIN}).status_code
            == 401
        )
        ok = gw.client.post(INFER, json=infer_image(1), headers={"X-API-Key": API})
        assert answered(ok) == "1"
        assert gw.client.delete(ROUTING, headers={"X-API-Key": ADMIN}).json()["rule"] is None


def test_without_admin_keys_an_api_key_is_enough_or_it_is_open(tmp_path: Path) -> None:
    with stack(tmp_path / "keys", {"AXON_API_KEYS": API}, classifier_versions=2) as gw:
        assert put(gw, {"weights": {"1": 1}}).status_code == 401
        assert put(gw, {"weights": {"1": 1}}, **{"X-API-Key": API}).status_code == 200
    with stack(tmp_path / "open", classifier_versions=2) as gw:
        assert put(gw, {"weights": {"1": 1}}).status_code == 200
        assert gw.client.delete(ROUTING).status_code == 200


def test_bad_rules_are_400s_naming_the_field(tmp_path: Path) -> None:
    with stack(tmp_path, classifier_versions=2) as gw:
        cases = [
            ({"weights": {"3": 10}}, "weights.3: no such version (versions: [1, 2])"),
            ({"weights": {"1": -1}}, "weights.1: must be an integer >= 0"),
            ({"weights": {"1": 0, "2": 0}}, "weights: must sum to more than 0"),
            ({"weights": {"1": 90}, "shadow": {"version": 3}}, "shadow.version: no such version 3"),
            ({"weights": {"1": 90}, "sticky_header": ""}, "sticky_header: must be null"),
            ([], "body: expected a JSON object"),
        ]
        for rule, message in cases:
            response = gw.client.put(ROUTING, json=rule)
            assert response.status_code == 400, rule
            assert response.json()["error"].startswith(message)
        broken = gw.client.put(ROUTING, content=b"{", headers={"content-type": "application/json"})
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
        unknown = gw.client.put("/v1/models/nope/routing", json={"weights": {"1": 1}})
        assert unknown.status_code == 404
        assert gw.client.get(ROUTING).json()["rule"] is None  # nothing was stored
        assert gw.client.post(ROUTING).status_code == 405


def test_routing_answers_503_when_the_queue_is_down(tmp_path: Path) -> None:
    with stack(tmp_path, classifier_versions=2) as gw:
        gw.queue.down = True
        response = put(gw, {"weights": {"1": 1}})
        assert response.status_code == 503 and "unreachable" in response.json()["error"]
        assert "Retry-After" in response.headers
        assert gw.client.delete(ROUTING).status_code == 503


def test_every_inference_response_names_its_version(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER, FORECASTER, GENERATOR]) as gw:
        http = gw.client
        binary = http.post(INFER, json=infer_image(2, parameters={"binary_data_output": True}))
        assert binary.status_code == 200 and binary.headers[HEADER] == "1"
        assert binary.headers["content-type"] == "application/octet-stream"
        forecast = http.post(f"/v1/models/{FORECASTER}/forecast", json={"history": [1, 2, 3, 4]})
        generated = http.post(f"/v1/models/{GENERATOR}/generate", json={"count": 1, "seed": 1})
        assert answered(forecast) == answered(generated) == "1"
        assert HEADER not in http.get(f"/v2/models/{CLASSIFIER}").headers  # not an inference


def test_rules_that_cannot_be_read_stay_as_they_were(tmp_path: Path) -> None:
    with stack(tmp_path, classifier_versions=2, seed=2) as gw:
        gw.serve(CLASSIFIER, 1)
        put(gw, {"weights": {"1": 1, "2": 1}})

        async def refused(models: object) -> dict[str, str]:
            raise TransportError("Redis", "NOPERM this user has no permissions")

        gw.queue.get_rules = refused  # type: ignore[method-assign]
        gw.serve(CLASSIFIER, 2)  # the refresh still sees workers come
        described = gw.client.get(ROUTING).json()
        assert described["rule"] == {"weights": {"1": 1, "2": 1}, "sticky_header": None}
        assert described["effective_weights"] == {"1": 1, "2": 1}
        assert gw.client.get("/healthz/ready").status_code == 200
