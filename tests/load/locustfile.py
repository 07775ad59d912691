"""Locust scenarios for Axon: every task endpoint and OIP infer, in a realistic mix.

Run headless through ``python -m tests.load.run`` (``make loadtest``), or directly:
``locust -f tests/load/locustfile.py --headless --host http://127.0.0.1:8000 -u 32 -r 4 -t 2m``.

Users and their weights (what a shared front door sees):

| user | weight | requests |
|---|---|---|
| ``ClassifyUser`` | 4 | one image (70 %), a small batch of 2–16 (20 %), one PNG (10 %) |
| ``InferUser`` (OIP v2) | 3 | one image, JSON or binary tensors (80 %); a batch of 8 (20 %) |
| ``ForecastUser`` | 2 | one history of the window (60 %), one of 4× the window (25 %), |
|  |  | 2–8 histories (15 %) |
| ``GenerateUser`` | 1 | 1 image as PNG (60 %), 2–8 as PNG (30 %), 4 as arrays (10 %) |

Models: ``AXON_LOAD_CLASSIFIER`` (digits-cnn), ``AXON_LOAD_FORECASTER`` (sunspots-lstm),
``AXON_LOAD_GENERATOR`` (digits-gan); the forecaster's window and the classifier's image
size are read from the gateway's model metadata. ``AXON_LOAD_API_KEY`` is sent as
``X-API-Key`` when set. Every non-2xx answer counts as a failure. OIP bodies are built
by the Python client's codec (``services.client.codec``), as its users send them.
"""

from __future__ import annotations

import base64
import io
import os
import random
from typing import Any

import numpy as np
from locust import HttpUser, between, task
from PIL import Image

from services.client.codec import encode_infer

CLASSIFIER = os.environ.get("AXON_LOAD_CLASSIFIER", "digits-cnn")
FORECASTER = os.environ.get("AXON_LOAD_FORECASTER", "sunspots-lstm")
GENERATOR = os.environ.get("AXON_LOAD_GENERATOR", "digits-gan")
API_KEY = os.environ.get("AXON_LOAD_API_KEY")


def _image(height: int, width: int, top: float) -> list[list[float]]:
    return [[round(random.uniform(0, top), 1) for _ in range(width)] for _ in range(height)]


class AxonUser(HttpUser):
    abstract = True
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        if API_KEY:
            self.client.headers["X-API-Key"] = API_KEY

    def metadata(self, model: str) -> dict[str, Any]:
        response = self.client.get(f"/v2/models/{model}", name="/v2/models/[model]")
        parameters: dict[str, Any] = response.json()["parameters"]
        return parameters


class ClassifyUser(AxonUser):
    weight = 4

    def on_start(self) -> None:
        super().on_start()
        image = self.metadata(CLASSIFIER).get("image", {})
        self.height, self.width = int(image.get("height", 8)), int(image.get("width", 8))
        self.top = float(image.get("value_range", [0, 16])[1])

    def _images(self, rows: int) -> list[Any]:
        return [[_image(self.height, self.width, self.top)] for _ in range(rows)]

    @task(7)
    def one_image(self) -> None:
        self.client.post(
            f"/v1/models/{CLASSIFIER}/classify", json={"images": self._images(1)}, name="classify 1"
        )

    @task(2)
    def small_batch(self) -> None:
        body = {"images": self._images(random.randint(2, 16)), "top_k": 3}
        self.client.post(f"/v1/models/{CLASSIFIER}/classify", json=body, name="classify batch")

    @task(1)
    def png(self) -> None:
        pixels = bytes(random.randrange(256) for _ in range(self.height * self.width))
        buffer = io.BytesIO()
        Image.frombytes("L", (self.width, self.height), pixels).save(buffer, "PNG")
        body = {"png": [base64.b64encode(buffer.getvalue()).decode()]}
        self.client.post(f"/v1/models/{CLASSIFIER}/classify", json=body, name="classify png")


class InferUser(AxonUser):
    weight = 3

    def _post(self, rows: int, name: str, **options: Any) -> None:
        images = np.asarray([[_image(8, 8, 16.0)] for _ in range(rows)], np.float32)
        body = encode_infer({"image": images}, **options)
        self.client.post(
            f"/v2/models/{CLASSIFIER}/infer", data=body.content, headers=body.headers, name=name
        )

    @task(8)
    def one(self) -> None:
        self._post(1, "infer 1", id="load", binary=random.random() < 0.5)

    @task(2)
    def batch(self) -> None:
        self._post(8, "infer batch", binary=False, outputs=["probabilities"])


class ForecastUser(AxonUser):
    weight = 2

    def on_start(self) -> None:
        super().on_start()
        self.window = int(self.metadata(FORECASTER).get("window", 12))

    def _series(self, length: int) -> list[float]:
        level = random.uniform(20, 120)
        return [round(level + random.gauss(0, 10), 2) for _ in range(length)]

    @task(12)
    def one(self) -> None:
        body = {"history": self._series(self.window)}
        self.client.post(f"/v1/models/{FORECASTER}/forecast", json=body, name="forecast 1")

    @task(5)
    def long_history(self) -> None:
        body = {"history": self._series(4 * self.window)}
        self.client.post(f"/v1/models/{FORECASTER}/forecast", json=body, name="forecast long")

    @task(3)
    def several(self) -> None:
        rows = random.randint(2, 8)
        body = {"histories": [self._series(self.window) for _ in range(rows)]}
        self.client.post(f"/v1/models/{FORECASTER}/forecast", json=body, name="forecast batch")


class GenerateUser(AxonUser):
    weight = 1

    @task(6)
    def one_png(self) -> None:
        body = {"count": 1, "seed": random.randrange(2**31)}
        self.client.post(f"/v1/models/{GENERATOR}/generate", json=body, name="generate 1")

    @task(3)
    def several_png(self) -> None:
        body = {"count": random.randint(2, 8), "seed": random.randrange(2**31)}
        self.client.post(f"/v1/models/{GENERATOR}/generate", json=body, name="generate png")

    @task(1)
    def arrays(self) -> None:
        body = {"count": 4, "format": "array", "seed": random.randrange(2**31)}
        self.client.post(f"/v1/models/{GENERATOR}/generate", json=body, name="generate array")
