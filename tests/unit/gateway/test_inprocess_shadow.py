"""Shadow traffic in-process: the real app on the memory queue, each version served by a
real ONNX Runtime worker. A rule's shadow copies the requests it routes to the shadow
version's job lane; the client always gets the primary's answer; the gateway compares
the two per task and shows the figures on ``GET /v1/models/{m}/routing`` and
``/metrics``. A shadow that fails, never answers, or is over its limits changes nothing
for clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.oip_pb import grpc_service_pb2 as pb
from services.gateway.oip_pb import grpc_service_pb2_grpc as pb_grpc
from services.runtime.redis_server import free_port
from tests.support.inprocess import CLASSIFIER, FORECASTER, GENERATOR, Stack, stack
from tests.support.onnx_models import (
    write_poison_classifier,
    write_tiny_forecaster,
    write_tiny_generator,
)

CLASSIFY = f"/v1/models/{CLASSIFIER}/classify"
ROUTING = f"/v1/models/{CLASSIFIER}/routing"


def shadow_rule(version: int = 2, fraction: float = 1.0) -> dict[str, Any]:
    return {"weights": {"1": 100}, "shadow": {"version": version, "fraction": fraction}}


def images(count: int, rng: np.random.Generator, high: int = 17) -> list[Any]:
    """``count`` 2×2 images with pixels in 0..high-1 (valid for the tiny classifier)."""
    return rng.integers(0, high, size=(count, 1, 2, 2)).astype(float).tolist()


def shadow_of(gw: Stack, model: str = CLASSIFIER) -> dict[str, Any]:
    response = gw.client.get(f"/v1/models/{model}/routing")
    assert response.status_code == 200, response.text
    shadow: dict[str, Any] = response.json()["shadow"]
    return shadow


def settle(gw: Stack, done: Callable[[dict[str, Any]], bool], model: str = CLASSIFIER) -> Any:
    """The shadow's stats once ``done(stats)`` holds (copies finish after their
    primaries: this waits for a count, never asserts on time; 30 s bound)."""
    until = time.monotonic() + 30
    while True:
        stats = shadow_of(gw, model)["stats"]
        if stats is not None and done(stats):
            return stats
        assert time.monotonic() < until, f"shadow figures never settled: {stats}"
        time.sleep(0.02)


def finished(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda stats: sum(stats["outcomes"].values()) >= count


def metric(gw: Stack, sample: str, **labels: str) -> float:
    """The sum of the ``/metrics`` samples named ``sample`` that have ``labels``."""
    found = [
        s.value
        for family in text_string_to_metric_families(gw.client.get("/metrics").text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    ]
    assert found, f"no sample {sample} {labels}"
    return float(sum(found))


def test_a_shadow_at_100_percent_answers_nothing_to_clients_and_compares_every_request(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, classifier_versions=2) as gw:
        gw.serve(CLASSIFIER, 1)
        gw.serve(CLASSIFIER, 2)
        put = gw.client.put(ROUTING, json=shadow_rule())
        assert put.status_code == 200, put.text
        assert put.json()["shadow"] == {"version": 2, "fraction": 1.0, "ready": True, "stats": None}
        rng = np.random.default_rng(3)
        rows = 0
        for count in (1, 2, 3) * 10:
            answer = gw.client.post(CLASSIFY, json={"images": images(count, rng)})
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Axon-Model-Version"] == "1"
            rows += count
        # Versioned requests and async jobs are not routed by the rule: never copied.
        pinned = gw.client.post(CLASSIFY, json={"images": images(1, rng), "version": 1})
        assert pinned.status_code == 200
        assert gw.client.post(f"/v2/models/{CLASSIFIER}/versions/1/infer", json={
            "inputs": [{"name": "image", "shape": [1, 1, 2, 2], "datatype": "FP32",
                        "data": [1, 2, 3, 4]}]}).status_code == 200  # fmt: skip
        job = gw.client.post(
            CLASSIFY, json={"images": images(1, rng)}, headers={"Prefer": "respond-async"}
        )
        assert job.status_code == 202
        stats = settle(gw, finished(30))
        assert stats["outcomes"]["compared"] == 30 and stats["compared"] == 30
        assert sum(stats["outcomes"].values()) == 30, stats["outcomes"]
        assert stats["rows"] == rows
        assert stats["top1_agreement"] == 1.0  # the same model twice
        assert stats["mean_difference"] == 0.0
        assert stats["latency_ms"]["primary"]["count"] == 30
        assert stats["latency_ms"]["shadow"]["count"] == 30
        v2 = {"model": CLASSIFIER, "version": "2"}
        assert metric(gw, "axon_shadow_requests_total", **v2, outcome="compared") == 30
        assert metric(gw, "axon_shadow_rows_total", **v2, top1="agree") == rows
        assert metric(gw, "axon_shadow_difference_count", **v2) == 30
        assert metric(gw, "axon_shadow_latency_seconds_count", **v2, role="shadow") == 30
        assert metric(gw, "axon_shadow_latency_seconds_count", **v2, role="primary") == 30
        assert metric(gw, "axon_shadow_inflight") == 0
        # Clients: 30 + 1 pinned answers of version 1, the job's 202, and nothing else.
        assert metric(gw, "axon_requests_total", endpoint="classify", code="200") == 31
        assert metric(gw, "axon_requests_total", endpoint="classify") == 32
        assert gw.queue.job_backlog(CLASSIFIER, 2) == 0  # every copy answered and read back
        # The console's fleet snapshot shows the same view.
        fleet = gw.client.get("/v1/fleet").json()
        (model,) = [m for m in fleet["models"] if m["name"] == CLASSIFIER]
        assert model["shadow"]["version"] == 2 and model["shadow"]["stats"]["compared"] == 30
        assert gw.client.delete(ROUTING).json()["shadow"]["version"] is None  # figures stay


def test_agreement_matches_a_direct_computation_and_shadow_errors_reach_no_client(
    tmp_path: Path,
) -> None:
    """Version 2 is another model (other weights) that fails for rows whose first
    pixel is 5 or more (a real ONNX Runtime failure): its copies of those requests are
    ``shadow_error``; the clients get version 1's answers all the same."""
    with stack(tmp_path) as gw:
        write_poison_classifier(tmp_path / "models", CLASSIFIER, 2, seed=7, poison_from=5)
        gw.serve(CLASSIFIER, 1)
        gw.serve(CLASSIFIER, 2)
        assert gw.client.put(ROUTING, json=shadow_rule()).status_code == 200
        rng = np.random.default_rng(11)
        good = [images(2, rng, high=5) for _ in range(20)]
        poison = [[[[[9.0, 1.0], [2.0, 3.0]]]] for _ in range(5)]
        for batch in good + poison:
            answer = gw.client.post(CLASSIFY, json={"images": batch})
            assert answer.status_code == 200, answer.text
        stats = settle(gw, finished(25))
        assert stats["outcomes"]["compared"] == 20
        assert stats["outcomes"]["shadow_error"] == 5
        # Direct: each version's top-1 label of the same images (versioned: not copied).
        agree = total = 0
        for batch in good:
            labels = [
                [p["index"] for p in gw.client.post(
                    CLASSIFY, json={"images": batch, "version": v}).json()["predictions"]]
                for v in (1, 2)
            ]  # fmt: skip
            agree += sum(a == b for a, b in zip(*labels, strict=True))
            total += len(batch)
        assert 0 < agree < total, "the two models should disagree on some rows"
        assert stats["rows"] == total
        assert stats["top1_agreement"] == round(agree / total, 6)
        v2 = {"model": CLASSIFIER, "version": "2"}
        assert metric(gw, "axon_shadow_rows_total", **v2, top1="disagree") == total - agree
        assert shadow_of(gw)["stats"]["outcomes"] == stats["outcomes"]  # nothing more came


def test_a_shadow_that_never_answers_times_out_and_over_the_cap_copies_are_dropped(
    tmp_path: Path,
) -> None:
    env = {"AXON_SHADOW_MAX_INFLIGHT": "2", "AXON_SHADOW_TIMEOUT_MS": "1500"}
    with stack(tmp_path, env, classifier_versions=2) as gw:
        gw.serve(CLASSIFIER, 1)
        gw.register(CLASSIFIER, 2)  # a heartbeat with no worker behind it: a hung shadow
        assert gw.client.put(ROUTING, json=shadow_rule()).status_code == 200
        rng = np.random.default_rng(5)
        for _ in range(5):
            answer = gw.client.post(CLASSIFY, json={"images": images(1, rng)})
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Axon-Model-Version"] == "1"
        stats = settle(gw, finished(5))
        assert stats["outcomes"]["timeout"] == 2
        assert stats["outcomes"]["dropped"] == 3
        assert metric(gw, "axon_shadow_inflight") == 0
        assert metric(gw, "axon_requests_total", endpoint="classify", code="200") == 5
        # Its queued copies stay for a worker that may come; their jobs were deleted,
        # so a late answer is stored nowhere (the memory queue's job records).
        assert gw.queue.job_backlog(CLASSIFIER, 2) == 2


def test_a_full_shadow_lane_refuses_copies_and_a_shadow_without_workers_is_skipped(
    tmp_path: Path,
) -> None:
    env = {"AXON_SHADOW_BACKLOG_LIMIT": "1", "AXON_SHADOW_TIMEOUT_MS": "1000"}
    with stack(tmp_path, env, classifier_versions=2) as gw:
        gw.serve(CLASSIFIER, 1)
        gw.register(CLASSIFIER, 2)
        assert gw.client.put(ROUTING, json=shadow_rule()).status_code == 200
        rng = np.random.default_rng(6)
        for _ in range(4):
            assert gw.client.post(CLASSIFY, json={"images": images(1, rng)}).status_code == 200
        stats = settle(gw, finished(4))
        assert stats["outcomes"]["timeout"] == 1
        assert stats["outcomes"]["refused"] == 3
    with stack(tmp_path / "none", classifier_versions=2) as gw:
        gw.serve(CLASSIFIER, 1)  # version 2 is known (repository) but has no worker
        assert gw.client.put(ROUTING, json=shadow_rule()).json()["shadow"]["ready"] is False
        for _ in range(3):
            assert gw.client.post(CLASSIFY, json={"images": images(1, rng)}).status_code == 200
        assert settle(gw, finished(3))["outcomes"]["unavailable"] == 3


def test_a_fraction_copies_about_that_share(tmp_path: Path) -> None:
    with stack(tmp_path, classifier_versions=2) as gw:
        gw.serve(CLASSIFIER, 1)
        gw.serve(CLASSIFIER, 2)
        assert gw.client.put(ROUTING, json=shadow_rule(fraction=0.25)).status_code == 200
        rng = np.random.default_rng(8)
        for _ in range(200):
            assert gw.client.post(CLASSIFY, json={"images": images(1, rng)}).status_code == 200
        time.sleep(0.5)  # let the copies of the last requests finish (counts, not time)
        copied = sum(shadow_of(gw)["stats"]["outcomes"].values())
        assert 20 <= copied <= 80, copied  # binomial(200, 0.25): 50 ± 4.4 sigma


def test_forecast_and_generate_compare_their_outputs_with_the_same_body_and_seed(
    tmp_path: Path,
) -> None:
    with stack(tmp_path) as gw:
        write_tiny_forecaster(tmp_path / "models", FORECASTER, 2)
        write_tiny_generator(tmp_path / "models", GENERATOR, 2)
        for model in (FORECASTER, GENERATOR):
            gw.serve(model, 1)
            gw.serve(model, 2)
            rule = {"weights": {"1": 100}, "shadow": {"version": 2}}
            assert gw.client.put(f"/v1/models/{model}/routing", json=rule).status_code == 200
        for step in range(5):
            forecast = gw.client.post(
                f"/v1/models/{FORECASTER}/forecast", json={"history": [1.0, 2.0, step, 4.0]}
            )
            assert forecast.status_code == 200, forecast.text
            # No seed: the gateway draws one into the body, so the copy has the same.
            image = gw.client.post(
                f"/v1/models/{GENERATOR}/generate", json={"count": 2, "label": 1, "format": "array"}
            )
            assert image.status_code == 200, image.text
        for model in (FORECASTER, GENERATOR):
            stats = settle(gw, finished(5), model)
            assert stats["outcomes"]["compared"] == 5, stats
            assert stats["mean_difference"] == 0.0
            assert stats["top1_agreement"] is None


def test_a_primary_that_fails_ends_its_copy_and_its_error_is_the_clients_own(
    tmp_path: Path,
) -> None:
    """Version 1 never answers (a heartbeat, no worker): each client gets its 504 at
    its own deadline, as without a shadow, and the copies (version 2 answers them) end
    ``primary_failed``: nothing to compare with."""
    with stack(tmp_path, classifier_versions=2) as gw:
        gw.register(CLASSIFIER, 1)
        gw.serve(CLASSIFIER, 2)
        assert gw.client.put(ROUTING, json=shadow_rule()).status_code == 200
        rng = np.random.default_rng(9)
        for _ in range(3):
            answer = gw.client.post(
                CLASSIFY, json={"images": images(1, rng)}, headers={"X-Axon-Timeout-Ms": "200"}
            )
            assert answer.status_code == 504, answer.text
        stats = settle(gw, finished(3))
        assert stats["outcomes"]["primary_failed"] == 3
        assert stats["compared"] == 0


def test_grpc_model_infer_is_copied_like_rest_and_a_versioned_call_is_not(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {"AXON_GRPC_PORT": str(port)}
    with stack(tmp_path, env, classifier_versions=2) as gw:
        gw.serve(CLASSIFIER, 1)
        gw.serve(CLASSIFIER, 2)
        assert gw.client.put(ROUTING, json=shadow_rule()).status_code == 200
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            # The pinned call first, with 1 row: were it copied, it would be among the
            # first copies to finish, and the rows would not add up to 3 x 2.
            for version, rows in (("1", 1), ("", 2), ("", 2), ("", 2)):
                images = np.arange(4 * rows, dtype=np.float32).reshape(rows, 1, 2, 2)
                request = pb.ModelInferRequest(
                    model_name=CLASSIFIER, model_version=version,
                    raw_input_contents=[images.tobytes()],
                )  # fmt: skip
                request.inputs.add(name="image", datatype="FP32", shape=images.shape)
                assert stub.ModelInfer(request).model_version == "1"
        stats = settle(gw, finished(3))
        assert stats["outcomes"]["compared"] == 3 and stats["rows"] == 6
