"""``Idempotency-Key`` on the real gateway app, in-process (memory queue, real ONNX
Runtime workers): a retry gets the stored answer without a second run, a different
body is 422, retryable failures are not stored, concurrent retries run once, and a bad
key is 400. (Across two gateway processes on Redis: tests/e2e/test_idempotency.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

from services.gateway.idempotency import Record, check_key, storable
from tests.support.inprocess import CLASSIFIER, infer_image, stack

INFER = f"/v2/models/{CLASSIFIER}/infer"


def test_a_retry_gets_the_stored_answer_without_running_again(tmp_path: Path) -> None:
    with stack(tmp_path) as gw:
        worker = gw.serve(CLASSIFIER)
        headers = {"Idempotency-Key": "order-1"}
        first = gw.client.post(INFER, json=infer_image(2), headers=headers)
        again = gw.client.post(INFER, json=infer_image(2), headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert again.headers["X-Axon-Model-Version"] == first.headers["X-Axon-Model-Version"]
        assert worker.entries == 1  # the model ran once
        other = gw.client.post(INFER, json=infer_image(2), headers={"Idempotency-Key": "order-2"})
        assert other.status_code == 200 and worker.entries == 2
        plain = gw.client.post(INFER, json=infer_image(2))
        assert plain.status_code == 200 and worker.entries == 3


def test_the_same_key_with_another_body_or_path_is_422(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        headers = {"Idempotency-Key": "k-422"}
        assert gw.client.post(INFER, json=infer_image(1), headers=headers).status_code == 200
        changed = gw.client.post(INFER, json=infer_image(3), headers=headers)
        assert changed.status_code == 422
        assert "different request" in changed.json()["error"]
        other_path = gw.client.post(
            f"/v2/models/{CLASSIFIER}/versions/1/infer", json=infer_image(1), headers=headers
        )
        assert other_path.status_code == 422


def test_a_retryable_failure_is_not_stored_and_a_final_4xx_is(tmp_path: Path) -> None:
    with stack(tmp_path) as gw:
        gw.register(CLASSIFIER)  # a heartbeat, no worker: the first attempt times out
        headers = {"Idempotency-Key": "k-504", "X-Axon-Timeout-Ms": "200"}
        assert gw.client.post(INFER, json=infer_image(1), headers=headers).status_code == 504
        worker = gw.serve(CLASSIFIER)
        retried = gw.client.post(INFER, json=infer_image(1), headers=headers)
        assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
        assert worker.entries >= 1
        bad = {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1]}]}
        key = {"Idempotency-Key": "k-400"}
        first = gw.client.post(INFER, json=bad, headers=key)
        assert first.status_code == 400
        again = gw.client.post(INFER, json=bad, headers=key)
        assert again.status_code == 400 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()


def test_concurrent_retries_of_one_key_run_the_model_once(tmp_path: Path) -> None:
    with stack(tmp_path) as gw:
        worker = gw.serve(CLASSIFIER)
        headers = {"Idempotency-Key": "burst"}
        statuses: list[int] = []
        bodies: list[object] = []

        def send() -> None:
            response = gw.client.post(INFER, json=infer_image(1), headers=headers)
            statuses.append(response.status_code)
            bodies.append(response.json()["outputs"])

        threads = [threading.Thread(target=send) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 40
        assert all(body == bodies[0] for body in bodies)
        assert worker.entries == 1


def test_bad_keys_are_400_and_other_routes_ignore_the_header(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        long = gw.client.post(INFER, json=infer_image(1), headers={"Idempotency-Key": "x" * 256})
        assert long.status_code == 400 and "Idempotency-Key" in long.json()["error"]
        meta = gw.client.get(f"/v2/models/{CLASSIFIER}", headers={"Idempotency-Key": "m"})
        assert meta.status_code == 200


def test_records_round_trip_and_malformed_ones_are_refused() -> None:
    record = Record("fp", "owner", 200, ((b"content-type", b"application/json"),), b"{}")
    assert Record.decode(record.encode()) == record
    for raw in (b"", b"\x93\x01\x02\x03", b"not msgpack \xc1"):
        try:
            Record.decode(raw)
        except ValueError as exc:
            assert "idempotency record" in str(exc)
        else:
            raise AssertionError(f"{raw!r} decoded")
    assert check_key(b"a b~") == "a b~"
    for status, kept in ((200, True), (404, True), (429, False), (408, False), (503, False)):
        assert storable(status, 10, 100) is kept
    assert storable(200, 101, 100) is False


def test_keys_are_scoped_by_the_api_key_that_sent_them(tmp_path: Path) -> None:
    env = {"AXON_API_KEYS": "key-alice-123,key-bob-4567"}
    with stack(tmp_path, env) as gw:
        worker = gw.serve(CLASSIFIER)
        alice = {"Idempotency-Key": "shared", "X-API-Key": "key-alice-123"}
        bob = {"Idempotency-Key": "shared", "X-API-Key": "key-bob-4567"}
        assert gw.client.post(INFER, json=infer_image(1), headers=alice).status_code == 200
        second = gw.client.post(INFER, json=infer_image(1), headers=bob)
        assert second.status_code == 200 and "Idempotent-Replayed" not in second.headers
        assert worker.entries == 2  # bob's request is not alice's
        again = gw.client.post(INFER, json=infer_image(1), headers=alice)
        assert again.headers["Idempotent-Replayed"] == "true" and worker.entries == 2
        nobody = gw.client.post(INFER, json=infer_image(1), headers={"Idempotency-Key": "shared"})
        assert nobody.status_code == 401  # the key check comes first


def test_a_store_that_is_down_answers_503_with_retry_after(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        gw.queue.down = True
        down = gw.client.post(INFER, json=infer_image(1), headers={"Idempotency-Key": "k"})
        assert down.status_code == 503 and down.headers["Retry-After"]
        assert "Idempotency-Key" in down.json()["error"]
