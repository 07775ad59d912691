"""Capture in-process (``AXON_CAPTURE_FRACTION``): the real app on the memory queue,
real ONNX Runtime workers. What is stored is the request exactly as queued and the
reply the client's answer was rendered from; off by default; sampled; capped; never
the async jobs or shadow copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.contract.capture import Captured
from services.contract.codec import decode_reply, decode_request
from services.contract.errors import SettingsError
from services.gateway.settings import GatewaySettings
from tests.support.inprocess import CLASSIFIER, GENERATOR, Stack, infer_image, stack

CLASSIFY = f"/v1/models/{CLASSIFIER}/classify"


def captures(gw: Stack, model: str = CLASSIFIER) -> list[Captured]:
    found: list[Captured] = gw.client.portal.call(  # type: ignore[union-attr]
        gw.queue.read_captures, model, 100_000
    )
    return found


def counted(gw: Stack, outcome: str) -> float:
    """``axon_captured_total`` of ``outcome``, summed over models."""
    return sum(
        float(line.split()[-1])
        for line in gw.client.get("/metrics").text.splitlines()
        if line.startswith("axon_captured_total{") and f'outcome="{outcome}"' in line
    )


def test_every_request_is_captured_as_queued_with_the_reply_it_was_answered_from(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, {"AXON_CAPTURE_FRACTION": "1"}, serve=[CLASSIFIER, GENERATOR]) as gw:
        pixels = [[[[1.0, 2.0], [3.0, 4.0]]], [[[5.0, 6.0], [7.0, 8.0]]]]
        answer = gw.client.post(CLASSIFY, json={"images": pixels, "top_k": 1})
        assert answer.status_code == 200
        oip = gw.client.post(f"/v2/models/{CLASSIFIER}/versions/1/infer", json=infer_image(3))
        assert oip.status_code == 200
        image = gw.client.post(
            f"/v1/models/{GENERATOR}/generate", json={"count": 2, "label": 1, "format": "array"}
        )
        assert image.status_code == 200
        job = gw.client.post(CLASSIFY, json={"images": pixels}, headers={"Prefer": "respond-async"})
        assert job.status_code == 202
        gw.client.get("/metrics")  # a round of the loop: the writer has run
        first, second = captures(gw)  # the job is not captured
        assert (first.version, first.task) == (1, "classify")
        request = decode_request(first.body)
        np.testing.assert_array_equal(request.inputs["image"], np.asarray(pixels, np.float32))
        reply = decode_reply(first.reply)
        assert reply.ok and reply.outputs is not None
        top = [int(np.argmax(row)) for row in reply.outputs["probabilities"]]
        assert top == [p["index"] for p in answer.json()["predictions"]]
        assert first.latency_us > 0 and first.request_id == answer.headers["x-request-id"]
        assert decode_request(second.body).inputs["image"].shape == (3, 1, 2, 2)
        (generated,) = captures(gw, GENERATOR)
        parameters = decode_request(generated.body).parameters
        assert parameters["seed"] == image.json()["seed"]  # the seed the gateway drew
        images = decode_reply(generated.reply).outputs or {}
        np.testing.assert_allclose(images["image"], np.asarray(image.json()["images"]), rtol=1e-6)
        assert counted(gw, "stored") == 3


def test_capture_is_off_by_default_sampled_capped_and_bounded_in_size(tmp_path: Path) -> None:
    with stack(tmp_path / "off", serve=[CLASSIFIER]) as gw:
        assert (
            gw.client.post(f"/v2/models/{CLASSIFIER}/infer", json=infer_image(1)).status_code == 200
        )
        assert captures(gw) == []
    env = {"AXON_CAPTURE_FRACTION": "0.5", "AXON_CAPTURE_MAX_ENTRIES": "30"}
    with stack(tmp_path / "half", env, serve=[CLASSIFIER]) as gw:
        for _ in range(200):
            assert (
                gw.client.post(f"/v2/models/{CLASSIFIER}/infer", json=infer_image(1)).status_code
                == 200
            )
        stored = counted(gw, "stored")
        assert 60 <= stored <= 140, stored  # binomial(200, 0.5): 100 ± 5.6 sigma
        assert len(captures(gw)) == 30  # the newest 30 kept
    env = {"AXON_CAPTURE_FRACTION": "1", "AXON_CAPTURE_MAX_BYTES": "100"}
    with stack(tmp_path / "small", env, serve=[CLASSIFIER]) as gw:
        assert (
            gw.client.post(f"/v2/models/{CLASSIFIER}/infer", json=infer_image(64)).status_code
            == 200
        )
        assert captures(gw) == [] and counted(gw, "too_large") == 1


def test_shadow_copies_are_not_captured(tmp_path: Path) -> None:
    with stack(tmp_path, {"AXON_CAPTURE_FRACTION": "1"}, classifier_versions=2) as gw:
        gw.serve(CLASSIFIER, 1)
        gw.serve(CLASSIFIER, 2)
        rule = {"weights": {"1": 100}, "shadow": {"version": 2}}
        assert gw.client.put(f"/v1/models/{CLASSIFIER}/routing", json=rule).status_code == 200
        for _ in range(5):
            assert (
                gw.client.post(f"/v2/models/{CLASSIFIER}/infer", json=infer_image(1)).status_code
                == 200
            )
        assert [c.version for c in captures(gw)] == [1] * 5


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "half"])
def test_a_bad_capture_fraction_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="AXON_CAPTURE_FRACTION"):
        GatewaySettings.from_env({"AXON_REDIS_URL": "redis://x", "AXON_CAPTURE_FRACTION": value})
