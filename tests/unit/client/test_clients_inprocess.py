"""``AxonClient`` and ``AsyncAxonClient`` against the real gateway app in-process (its
routes, middlewares and lifespan on the memory queue, real ONNX Runtime workers): every
endpoint, binary and JSON tensors, retries of 429 and 503, error messages, API keys.
The retry waits go to fake sleeps: no test waits for a Retry-After."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from services.client import (
    AsyncAxonClient,
    AxonClient,
    AxonHTTPError,
    InferResult,
    RetryPolicy,
)
from tests.support.inprocess import CLASSIFIER, FORECASTER, GENERATOR, Stack, stack
from tests.unit.client.asgi_stack import BASE_URL, async_stack

IMAGES = (np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2) * 3) % 17
HISTORIES = np.array([[1, 2, 3, 4], [4, 4, 4, 4]], np.float32)
ALL = [CLASSIFIER, FORECASTER, GENERATOR]


class Sleeps(list[float]):
    """A fake ``sleep``: records each wait and runs ``then`` (once) instead of waiting."""

    def __init__(self, then: Any = None) -> None:
        super().__init__()
        self.then = then

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.then is not None:
            then, self.then = self.then, None
            then()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Stack]:
    with stack(tmp_path, serve=ALL) as gw:
        yield gw


def client(gw: Stack, **options: Any) -> AxonClient:
    return AxonClient(BASE_URL, http=gw.client, **options)


def png(pixels: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255 / 16).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_same(a: InferResult, b: InferResult) -> None:
    assert (a.model_name, a.model_version) == (b.model_name, b.model_version)
    assert list(a.outputs) == list(b.outputs)
    for name in a.outputs:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])


def test_metadata_health_readiness_and_the_model_list(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw, client(gw) as axon:
        server = axon.server_metadata()
        assert server.name == "axon" and "binary_tensor_data" in server.extensions
        assert axon.server_live() is True
        assert axon.server_ready() is False  # forecaster and generator have no worker
        assert axon.model_ready(CLASSIFIER) and axon.model_ready(CLASSIFIER, version=1)
        assert axon.model_ready(FORECASTER) is False
        meta = axon.model_metadata(CLASSIFIER)
        assert meta.versions == ("1",) and meta.task == "classify"
        assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [
            ("image", "FP32", (-1, 1, 2, 2))
        ]
        assert meta.parameters["labels"] == ["a", "b", "c"]
        listed = {m.name: m for m in axon.models()}
        assert listed[CLASSIFIER].versions[0].ready and listed[CLASSIFIER].versions[0].workers == 1
        assert listed[GENERATOR].task == "generate" and not listed[GENERATOR].versions[0].ready
        with pytest.raises(AxonHTTPError) as unknown:
            axon.model_ready("no-such-model")
        assert unknown.value.status == 404 and "no-such-model" in unknown.value.message
    assert not gw.client.is_closed  # an injected client is the caller's to close


def test_binary_and_json_infer_agree_on_every_model(gateway: Stack) -> None:
    with client(gateway) as axon:
        cases = [
            (CLASSIFIER, {"image": IMAGES}, None),
            (FORECASTER, {"history": HISTORIES}, None),
            (GENERATOR, {}, {"seed": 5, "count": 2, "label": 1}),
        ]
        for model, inputs, parameters in cases:
            binary = axon.infer(model, inputs, parameters=parameters, id="r-1")
            as_json = axon.infer(model, inputs, parameters=parameters, binary=False)
            assert binary.id == "r-1" and as_json.id is None
            assert binary.model_name == model and binary.model_version == "1"
            assert_same(binary, as_json)
        probabilities = axon.infer(CLASSIFIER, {"image": IMAGES})["probabilities"]
        assert probabilities.shape == (3, 3) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        chosen = axon.infer(CLASSIFIER, {"image": IMAGES}, version=1, outputs=["logits"])
        assert list(chosen.outputs) == ["logits"]
        # Statistics come from worker heartbeats (the memory workers publish zeros).
        stats = axon.statistics(GENERATOR, version=1)
        assert stats[0]["name"] == GENERATOR and "inference_stats" in stats[0]
        assert {s["name"] for s in axon.statistics()} == set(ALL)


def test_task_endpoints_give_typed_results_that_match_infer(gateway: Stack) -> None:
    with client(gateway) as axon:
        probabilities = axon.infer(CLASSIFIER, {"image": IMAGES})["probabilities"]
        by_array = axon.classify(CLASSIFIER, IMAGES, top_k=2)
        assert (by_array.model, by_array.version) == (CLASSIFIER, 1)
        for prediction, row in zip(by_array.predictions, probabilities, strict=True):
            assert prediction.index == int(np.argmax(row)) and len(prediction.top_k) == 2
            assert prediction.probability == pytest.approx(float(row.max()))
            assert prediction.label == "abc"[prediction.index] == prediction.top_k[0].label
        three_d = axon.classify(CLASSIFIER, IMAGES[:, 0])  # [N, H, W]: one channel
        by_png = axon.classify(CLASSIFIER, pngs=[png(IMAGES[0, 0])])
        assert [p.index for p in three_d.predictions] == [p.index for p in by_array.predictions]
        assert by_png.predictions[0].label == by_array.predictions[0].label
        forecast = axon.forecast(FORECASTER, HISTORIES, horizon=1)
        assert (forecast.horizon, forecast.window) == (1, 4)
        np.testing.assert_array_equal(forecast.forecasts, [[2.5], [4.0]])
        single = axon.forecast(FORECASTER, [1.0, 2.0, 3.0, 4.0])
        np.testing.assert_array_equal(single.forecasts[:, :1], [[2.5]])
        arrays = axon.generate(GENERATOR, count=2, seed=5, label=1, format="array")
        tensors = axon.infer(GENERATOR, {}, parameters={"seed": 5, "count": 2, "label": 1})
        assert arrays.images is not None and arrays.pngs == ()
        np.testing.assert_allclose(arrays.images, tensors["image"], rtol=1e-6)
        pngs = axon.generate(GENERATOR, count=2)
        assert pngs.images is None and len(pngs.pngs) == 2 and isinstance(pngs.seed, int)
        assert Image.open(io.BytesIO(pngs.pngs[0])).size == (2, 2)
        with pytest.raises(ValueError, match="either images"):
            axon.classify(CLASSIFIER)


def test_a_bad_request_raises_the_gateways_400_message_and_is_not_retried(
    gateway: Stack,
) -> None:
    sleeps = Sleeps()
    with client(gateway, sleep=sleeps) as axon:
        with pytest.raises(AxonHTTPError) as wrong_type:
            axon.infer(CLASSIFIER, {"image": IMAGES.astype(np.float64)})
        error = wrong_type.value
        assert error.status == 400 and "image" in error.message and "FP64" in error.message
        assert error.method == "POST" and error.path == f"/v2/models/{CLASSIFIER}/infer"
        assert error.request_id and str(error).startswith("400 POST /v2/models/")
        for as_binary in (True, False):
            with pytest.raises(AxonHTTPError, match="is not an output of") as output:
                axon.infer(CLASSIFIER, {"image": IMAGES}, outputs=["nope"], binary=as_binary)
            assert output.value.status == 400
        with pytest.raises(AxonHTTPError, match="does a classify task") as task:
            axon.forecast(CLASSIFIER, [1.0, 2.0])
        assert task.value.status == 400
    assert sleeps == []


def test_429_with_retry_after_is_retried_until_the_backlog_drains(tmp_path: Path) -> None:
    env = {"AXON_BACKLOG_LIMIT": "1", "AXON_RETRY_AFTER_S": "3"}
    with stack(tmp_path, env) as gw:
        gw.register(CLASSIFIER)  # a heartbeat, nobody computing: entries stay queued
        with client(gw) as axon, pytest.raises(AxonHTTPError) as late:
            axon.infer(CLASSIFIER, {"image": IMAGES}, timeout_ms=20)
        assert late.value.status == 504  # not retried; its entry fills the backlog
        assert gw.queue.backlog(CLASSIFIER, 1) == 1

        def a_worker_drains_the_backlog() -> None:
            gw.serve(CLASSIFIER)
            deadline = time.monotonic() + 10
            while gw.queue.backlog(CLASSIFIER, 1) and time.monotonic() < deadline:
                time.sleep(0.005)

        sleeps = Sleeps(then=a_worker_drains_the_backlog)
        with client(gw, sleep=sleeps) as axon:
            result = axon.infer(CLASSIFIER, {"image": IMAGES})
        assert result["probabilities"].shape == (3, 3)
        assert sleeps == [3.0]  # the gateway's Retry-After, once


def test_429_gives_up_after_the_attempts_with_the_last_answer(tmp_path: Path) -> None:
    env = {"AXON_BACKLOG_LIMIT": "1", "AXON_RETRY_AFTER_S": "3"}
    with stack(tmp_path, env) as gw:
        gw.register(CLASSIFIER)
        sleeps = Sleeps()
        with client(gw, sleep=sleeps, retry=RetryPolicy(attempts=3)) as axon:
            with pytest.raises(AxonHTTPError):
                axon.infer(CLASSIFIER, {"image": IMAGES}, timeout_ms=20)
            with pytest.raises(AxonHTTPError) as full:
                axon.infer(CLASSIFIER, {"image": IMAGES})
    assert full.value.status == 429 and full.value.retry_after_s == 3.0
    assert "queued (limit 1)" in full.value.message
    assert sleeps == [3.0, 3.0]


def test_503_without_a_live_worker_waits_retry_after_then_raises(tmp_path: Path) -> None:
    with stack(tmp_path, {"AXON_NO_WORKER_WAIT_MS": "0", "AXON_RETRY_AFTER_S": "2"}) as gw:
        sleeps = Sleeps()
        policy = RetryPolicy(attempts=3, backoff_s=0.5)
        with client(gw, sleep=sleeps, retry=policy, random=lambda: 0.0) as axon:
            with pytest.raises(AxonHTTPError, match="no live worker") as down:
                axon.classify(CLASSIFIER, IMAGES)
            assert axon.model_ready(CLASSIFIER) is False  # readiness reports, never retries
    assert down.value.status == 503 and down.value.retry_after_s == 2.0
    assert sleeps == [2.0, 2.0]  # the gateway's Retry-After, not the backoff


def test_the_api_key_goes_as_a_bearer_token(tmp_path: Path) -> None:
    with stack(tmp_path, {"AXON_API_KEYS": "key-one-1,key-two-22"}, serve=[CLASSIFIER]) as gw:
        with client(gw, api_key="key-two-22") as axon:
            assert axon.infer(CLASSIFIER, {"image": IMAGES})["logits"].shape == (3, 3)
            assert axon.model_metadata(CLASSIFIER).name == CLASSIFIER
        sleeps = Sleeps()
        for key in (None, "wrong-key-3"):
            with client(gw, api_key=key, sleep=sleeps) as axon:
                with pytest.raises(AxonHTTPError) as refused:
                    axon.infer(CLASSIFIER, {"image": IMAGES})
                assert refused.value.status == 401 and refused.value.message
                assert axon.server_live() is True  # health stays open
        assert sleeps == []


def test_the_async_client_over_the_same_app(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with async_stack(tmp_path, serve=ALL) as gw:
            async with AsyncAxonClient(BASE_URL, http=gw.http) as axon:
                assert await axon.server_ready() and await axon.model_ready(GENERATOR)
                assert (await axon.server_metadata()).name == "axon"
                assert (await axon.model_metadata(FORECASTER)).task == "forecast"
                binary = await axon.infer(CLASSIFIER, {"image": IMAGES})
                as_json = await axon.infer(CLASSIFIER, {"image": IMAGES}, binary=False)
                assert_same(binary, as_json)
                classified = await axon.classify(CLASSIFIER, IMAGES, top_k=1)
                assert [p.index for p in classified.predictions] == list(
                    np.argmax(binary["probabilities"], axis=1)
                )
                forecast = await axon.forecast(FORECASTER, HISTORIES, horizon=1)
                np.testing.assert_array_equal(forecast.forecasts, [[2.5], [4.0]])
                generated = await axon.generate(GENERATOR, count=3, seed=2, format="array")
                assert generated.images is not None and generated.images.shape == (3, 1, 2, 2)
                assert (await axon.statistics(CLASSIFIER))[0]["axon"]["workers"] == 1
                assert {m.name for m in await axon.models()} == set(ALL)
                with pytest.raises(AxonHTTPError) as bad:
                    await axon.infer(CLASSIFIER, {"image": IMAGES[0]})  # no batch axis
                assert bad.value.status == 400 and "image" in bad.value.message
            assert not gw.http.is_closed

    asyncio.run(scenario())


def test_the_async_client_retries_a_429_until_a_worker_drains_the_backlog(
    tmp_path: Path,
) -> None:
    env = {"AXON_BACKLOG_LIMIT": "1", "AXON_RETRY_AFTER_S": "2"}

    async def scenario() -> list[float]:
        async with async_stack(tmp_path, env, register=[CLASSIFIER]) as gw:
            sleeps: list[float] = []

            async def sleep(seconds: float) -> None:
                sleeps.append(seconds)
                if len(sleeps) == 1:
                    gw.serve(CLASSIFIER)
                while gw.queue.backlog(CLASSIFIER, 1):
                    await asyncio.sleep(0.005)  # the worker runs on this loop

            async with AsyncAxonClient(BASE_URL, http=gw.http, sleep=sleep) as axon:
                with pytest.raises(AxonHTTPError, match="deadline"):
                    await axon.infer(CLASSIFIER, {"image": IMAGES}, timeout_ms=20)
                result = await axon.infer(CLASSIFIER, {"image": IMAGES})
            assert result["probabilities"].shape == (3, 3)
            return sleeps

    assert asyncio.run(scenario()) == [2.0]


def test_an_idempotent_client_sends_one_key_per_call_and_the_same_on_its_retries(
    tmp_path: Path,
) -> None:
    """``idempotent=True``: a 429 retried after ``Retry-After`` carries the first try's
    ``Idempotency-Key``; the next call gets a new one; GETs carry none."""
    env = {"AXON_BACKLOG_LIMIT": "1", "AXON_RETRY_AFTER_S": "3"}
    with stack(tmp_path, env) as gw:
        gw.register(CLASSIFIER)
        with client(gw) as axon, pytest.raises(AxonHTTPError):
            axon.infer(CLASSIFIER, {"image": IMAGES}, timeout_ms=20)  # fills the backlog
        sent: list[str | None] = []
        real = gw.client.request

        def recording(method: str, url: str, **kwargs: Any) -> Any:
            sent.append((kwargs.get("headers") or {}).get("idempotency-key"))
            return real(method, url, **kwargs)

        gw.client.request = recording  # type: ignore[method-assign]

        def a_worker_drains_the_backlog() -> None:
            gw.serve(CLASSIFIER)
            deadline = time.monotonic() + 10
            while gw.queue.backlog(CLASSIFIER, 1) and time.monotonic() < deadline:
                time.sleep(0.005)

        with client(gw, sleep=Sleeps(then=a_worker_drains_the_backlog), idempotent=True) as axon:
            axon.infer(CLASSIFIER, {"image": IMAGES})
            axon.infer(CLASSIFIER, {"image": IMAGES})
            axon.model_ready(CLASSIFIER)
        first, retried, second, ready = sent
        assert first is not None and retried == first  # a 429, then its retry
        assert second is not None and second != first
        assert ready is None
