"""Async jobs (``Prefer: respond-async``) on the real gateway app, in-process (memory
queue, real ONNX Runtime workers): 202 + Location on every inference endpoint, the
result is exactly the synchronous body (JSON ``result``, and ``/result`` byte for byte,
binary tensors included), failures carry the synchronous status, jobs are scoped by
API key, the job backlog has its own limit, and a worker's batch takes requests before
jobs. (On Redis with real workers and gateway processes: tests/integration/services/
test_job_lane.py, tests/e2e/test_jobs.py.)"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from services.contract.jobs import NewJob
from services.contract.protocol import NewEntry
from services.gateway.jobs import JobId
from services.gateway.transport_memory import MemoryTransport
from tests.support.inprocess import CLASSIFIER, FORECASTER, GENERATOR, infer_image, stack
from tests.support.redis import wait_for

INFER = f"/v2/models/{CLASSIFIER}/infer"
ASYNC = {"Prefer": "respond-async"}


def _finished(client: Any, url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The job's status document once it is no longer pending."""

    def done() -> dict[str, Any] | None:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        if doc["status"] == "pending":
            assert response.headers["Retry-After"] == "1"
            return None
        return doc

    return wait_for(done, timeout_s=30, what=f"job {url}")


def _submit(client: Any, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**ASYNC, **kwargs.pop("headers", {})}
    response: httpx.Response = client.post(path, headers=headers, **kwargs)
    assert response.status_code == 202, response.text
    return response


def test_every_inference_endpoint_answers_202_and_the_result_is_the_synchronous_body(
    tmp_path: Path,
) -> None:
    pixels = (np.arange(8, dtype=np.float32).reshape(2, 2, 2) % 17).tolist()
    calls: list[tuple[str, dict[str, Any]]] = [
        (INFER, infer_image(3, id="req-7")),
        (f"/v2/models/{CLASSIFIER}/versions/1/infer", infer_image(1)),
        (f"/v1/models/{CLASSIFIER}/classify", {"images": pixels, "top_k": 2}),
        (f"/v1/models/{FORECASTER}/forecast", {"history": [0.1] * 8, "horizon": 2}),
        (f"/v1/models/{GENERATOR}/generate", {"count": 2, "seed": 5, "format": "array"}),
        (f"/v1/models/{GENERATOR}/generate", {"count": 1, "seed": 9}),
    ]
    with stack(tmp_path, serve=[CLASSIFIER, FORECASTER, GENERATOR]) as gw:
        for path, body in calls:
            sync = gw.client.post(path, json=body)
            assert sync.status_code == 200, sync.text
            accepted = _submit(gw.client, path, json=body)
            doc = accepted.json()
            assert accepted.headers["Location"] == doc["status_url"] == f"/v1/jobs/{doc['id']}"
            assert accepted.headers["Preference-Applied"] == "respond-async"
            assert doc["status"] == "pending"
            assert JobId.parse(doc["id"]).model == path.split("/")[3]
            status = _finished(gw.client, doc["status_url"])
            assert status["status"] == "succeeded" and status["http_status"] == 200
            assert status["result"] == sync.json(), path
            result = gw.client.get(doc["result_url"])
            assert result.status_code == 200
            assert result.content == sync.content, path
            assert result.headers["X-Axon-Model-Version"] == sync.headers["X-Axon-Model-Version"]
        png = gw.client.get(
            _submit(gw.client, calls[-1][0], json=calls[-1][1]).headers["Location"] + "/result"
        )
        assert base64.b64decode(png.json()["images"][0]).startswith(b"\x89PNG")


def test_a_binary_result_is_at_result_url_byte_for_byte(tmp_path: Path) -> None:
    body = infer_image(2, parameters={"binary_data_output": True})
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        sync = gw.client.post(INFER, json=body)
        assert sync.headers["content-type"] == "application/octet-stream"
        location = _submit(gw.client, INFER, json=body).headers["Location"]
        status = _finished(gw.client, location)
        assert status["status"] == "succeeded" and "result" not in status
        assert status["content_type"] == "application/octet-stream"
        result = gw.client.get(status["result_url"])
        assert result.content == sync.content
        length = "inference-header-content-length"
        assert result.headers[length] == sync.headers[length]


def test_a_failed_job_carries_the_synchronous_status_and_error(tmp_path: Path) -> None:
    poison = infer_image(1)
    poison["inputs"][0]["data"][0][0][0][0] = 17.0  # the poison model fails on this row
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        sync = gw.client.post(INFER, json=poison)
        assert sync.status_code >= 500
        status = _finished(gw.client, _submit(gw.client, INFER, json=poison).headers["Location"])
        assert status["status"] == "failed"
        assert status["http_status"] == sync.status_code
        assert status["error"]["code"] == "inference_failed"
        assert status["error"]["message"] == sync.json()["error"]
        result = gw.client.get(status["result_url"])
        assert result.status_code == sync.status_code and result.json() == sync.json()


def test_bad_input_is_refused_before_a_job_exists(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        bad = {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1]}]}
        response = gw.client.post(INFER, json=bad, headers=ASYNC)
        assert response.status_code == 400 and "shape" in response.json()["error"]
        assert gw.queue.job_backlog(CLASSIFIER, 1) == 0


def test_unknown_malformed_and_other_principals_jobs_are_404(tmp_path: Path) -> None:
    env = {"AXON_API_KEYS": "key-alice-123,key-bob-4567"}
    alice, bob = {"X-API-Key": "key-alice-123"}, {"X-API-Key": "key-bob-4567"}
    with stack(tmp_path, env, serve=[CLASSIFIER]) as gw:
        location = _submit(gw.client, INFER, json=infer_image(1), headers=alice).headers["Location"]
        assert _finished(gw.client, location, alice)["status"] == "succeeded"
        other = gw.client.get(location, headers=bob)
        assert other.status_code == 404 and "another API key" in other.json()["error"]
        assert gw.client.get(location + "/result", headers=bob).status_code == 404
        assert gw.client.get(location).status_code == 401
        unknown = str(JobId.new(CLASSIFIER, 1))
        assert gw.client.get(f"/v1/jobs/{unknown}", headers=alice).status_code == 404
        for bad in ("nope", "a.b.c", f"{CLASSIFIER}.0.{'0' * 32}", f"{CLASSIFIER}.1.XYZ"):
            assert gw.client.get(f"/v1/jobs/{bad}", headers=alice).status_code == 404


def test_jobs_have_their_own_backlog_limit_and_wait_for_a_worker(tmp_path: Path) -> None:
    env = {"AXON_JOB_BACKLOG_LIMIT": "2", "AXON_BACKLOG_LIMIT": "1"}
    with stack(tmp_path, env) as gw:
        gw.register(CLASSIFIER)  # a heartbeat only: nothing is computed yet
        locations = [
            _submit(gw.client, INFER, json=infer_image(1)).headers["Location"] for _ in range(2)
        ]
        full = gw.client.post(INFER, json=infer_image(1), headers=ASYNC)
        assert full.status_code == 429 and "AXON_JOB_BACKLOG_LIMIT" in full.json()["error"]
        assert full.headers["Retry-After"] == "1"
        assert gw.client.get(locations[0]).json()["status"] == "pending"
        assert gw.client.get(locations[0] + "/result").status_code == 202
        gw.serve(CLASSIFIER)
        for location in locations:
            assert _finished(gw.client, location)["status"] == "succeeded"


def test_prefer_with_an_idempotency_key_replays_the_same_job(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        headers = {"Idempotency-Key": "job-1"}
        first = _submit(gw.client, INFER, json=infer_image(1), headers=headers)
        again = _submit(gw.client, INFER, json=infer_image(1), headers=headers)
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["Idempotent-Replayed"] == "true"


def test_prefer_parsing_ignores_other_preferences(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        for prefer in ("wait=5, Respond-Async", "return=minimal;x=1,respond-async;a=b"):
            assert gw.client.post(
                INFER, json=infer_image(1), headers={"Prefer": prefer}
            ).status_code == 202  # fmt: skip
        for prefer in ("wait=5", "respond-asynchronously", ""):
            assert gw.client.post(
                INFER, json=infer_image(1), headers={"Prefer": prefer}
            ).status_code == 200  # fmt: skip


def test_a_memory_worker_batch_takes_requests_first_and_fills_with_jobs() -> None:
    async def scenario() -> list[str]:
        queue = MemoryTransport("t")
        for n in range(3):
            entry = NewEntry(f"job-{n}", f"axon:job:{{m:1}}:{n}", 0, b"x")
            await queue.submit_job(
                "m", 1, NewJob(entry.reply_to, b"meta", 60, entry),
                limit=10, maxlen=10, byte_limit=100,
            )  # fmt: skip
        for n in range(3):
            await queue.submit(
                "m", 1, NewEntry(f"req-{n}", "r", 0, b"x"), limit=10, maxlen=10, byte_limit=100
            )
        first = await queue.take_lanes("m", 1, count=4, timeout_s=0)
        second = await queue.take_lanes("m", 1, count=4, timeout_s=0)
        return [e.request_id for _, e in first] + ["|"] + [e.request_id for _, e in second]

    taken = asyncio.run(scenario())
    assert taken == ["req-0", "req-1", "req-2", "job-0", "|", "job-1", "job-2"]
