"""Axon's own Python client (``services.client``) against ``axon serve``: inference on
every model, binary (the default) and JSON giving the same arrays, and the task
endpoints agreeing with the tensors; the README's example as written."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.client import AsyncAxonClient, AxonClient, AxonHTTPError
from tests.e2e.conftest import MODELS, Stack
from tests.e2e.payloads import history, images

IMAGES = np.asarray(images(4, seed=3), np.float32)
HISTORIES = np.asarray([history(12), history(20)[-12:]], np.float32)
CASES: dict[str, tuple[dict[str, np.ndarray[Any, Any]], dict[str, Any] | None]] = {
    "digits-cnn": ({"image": IMAGES}, None),
    "sunspots-lstm": ({"history": HISTORIES}, None),
    "digits-gan": ({}, {"seed": 3, "count": 2, "label": 5}),
}


@pytest.fixture
def axon(stack: Stack) -> Iterator[AxonClient]:
    with AxonClient(stack.url) as client:
        yield client


@pytest.mark.parametrize("model", MODELS)
def test_infer_binary_and_json_agree(axon: AxonClient, model: str) -> None:
    assert axon.model_ready(model)
    inputs, parameters = CASES[model]
    binary = axon.infer(model, inputs, parameters=parameters, id=f"{model}-1")
    as_json = axon.infer(model, inputs, parameters=parameters, binary=False)
    assert (binary.model_name, binary.model_version, binary.id) == (model, "1", f"{model}-1")
    declared = [spec.name for spec in axon.model_metadata(model).outputs]
    assert list(binary.outputs) == list(as_json.outputs) == declared
    for name, array in binary.outputs.items():
        assert array.dtype == as_json[name].dtype == np.float32
        np.testing.assert_array_equal(array, as_json[name])


def test_task_endpoints_agree_with_infer(axon: AxonClient) -> None:
    probabilities = axon.infer("digits-cnn", {"image": IMAGES})["probabilities"]
    classified = axon.classify("digits-cnn", IMAGES, top_k=3)
    assert [p.index for p in classified.predictions] == list(np.argmax(probabilities, axis=1))
    assert [p.probability for p in classified.predictions] == pytest.approx(
        probabilities.max(axis=1).tolist(), abs=1e-6
    )
    forecast = axon.forecast("sunspots-lstm", HISTORIES, horizon=2)
    tensors = axon.infer("sunspots-lstm", {"history": HISTORIES})["forecast"]
    np.testing.assert_allclose(forecast.forecasts, tensors[:, :2], atol=1e-5)
    generated = axon.generate("digits-gan", count=2, seed=3, label=5, format="array")
    assert generated.images is not None and generated.images.shape == (2, 1, 8, 8)
    with pytest.raises(AxonHTTPError) as wrong:
        axon.infer("digits-cnn", {"image": IMAGES[:, :, :, :7]})
    assert wrong.value.status == 400 and "image" in wrong.value.message


def test_the_async_client_over_real_sockets(stack: Stack) -> None:
    async def scenario() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        async with AsyncAxonClient(stack.url) as axon:
            assert await axon.server_live()
            results = await asyncio.gather(
                axon.infer("digits-cnn", {"image": IMAGES}),
                axon.infer("digits-cnn", {"image": IMAGES}, binary=False),
            )
        return results[0]["logits"], results[1]["logits"]

    binary, as_json = asyncio.run(scenario())
    np.testing.assert_array_equal(binary, as_json)


def test_the_readme_example_runs(stack: Stack) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Python client", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None, "README: no python block in the Python client section"
    code = example.group(1).replace("http://127.0.0.1:8000", stack.url)
    exec(compile(code, "README.md (Python client)", "exec"), {})
