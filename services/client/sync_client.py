"""``AxonClient``: the gateway's HTTP API over a blocking ``httpx.Client``."""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import httpx
import numpy as np

from . import calls
from .base import DEFAULT_RETRY, DEFAULT_TIMEOUT_S, DEFAULT_URL, ClientBase, answer
from .calls import Call, Response
from .codec import InferResult, Scalar
from .results import (
    ClassifyResult,
    ForecastResult,
    GenerateResult,
    ModelMetadata,
    ModelSummary,
    ServerMetadata,
)
from .retry import RetryPolicy
from .retry import call as call_with_retries

T = TypeVar("T")


class SyncHTTP(Protocol):
    """The part of ``httpx.Client`` the client uses (Starlette's TestClient has it too)."""

    def request(
        self, method: str, url: str, *, content: bytes | None = ..., headers: Mapping[str, str]
    ) -> Response: ...

    def close(self) -> None: ...


class AxonClient(ClientBase):
    """Axon's gateway over HTTP, blocking. ``with AxonClient(url, api_key=K) as axon:``.

    ``http``: an ``httpx.Client`` (or look-alike) to send through instead of the
    client's own; it is not closed by ``close``, and its own timeout applies. 429 and
    503 answers are tried again under ``retry`` (``Retry-After`` honoured); any other
    error status raises ``AxonHTTPError`` at once. ``clock``, ``sleep`` and ``random``
    drive the retry waits (tests pass fakes). ``idempotent``: each inference call carries
    its own ``Idempotency-Key``, the same on its retries (docs/client.md)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy = DEFAULT_RETRY,
        headers: Mapping[str, str] | None = None,
        http: SyncHTTP | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        random: Callable[[], float] = _random.random,
        idempotent: bool = False,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            headers=headers,
            retry=retry,
            clock=clock,
            random=random,
            idempotent=idempotent,
        )
        self._owned = http is None
        self._http: SyncHTTP = httpx.Client(timeout=timeout) if http is None else http
        self._sleep = sleep

    def __enter__(self) -> AxonClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's own connections (an injected ``http`` stays open)."""
        if self._owned:
            self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send ``call`` (retried under the policy) and read its answer."""
        url, headers = self._url(call), self._request_headers(call)

        def once() -> Response:
            return self._http.request(call.method, url, content=call.content, headers=headers)

        response = call_with_retries(
            once,
            answer,
            self._policy(call),
            clock=self._clock,
            sleep=self._sleep,
            random=self._random,
        )
        return call.result(response)

    # ------------------------------------------------------------------ OIP v2

    def server_metadata(self) -> ServerMetadata:
        return self.send(calls.server_metadata())

    def server_live(self) -> bool:
        return self.send(calls.server_live())

    def server_ready(self) -> bool:
        """Every model the gateway knows has a ready version (OIP server readiness)."""
        return self.send(calls.server_ready())

    def model_metadata(self, model: str, *, version: str | int | None = None) -> ModelMetadata:
        return self.send(calls.model_metadata(model, version))

    def model_ready(self, model: str, *, version: str | int | None = None) -> bool:
        return self.send(calls.model_ready(model, version))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        *,
        version: str | int | None = None,
        parameters: Mapping[str, Scalar] | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
        timeout_ms: int | None = None,
        id: str | None = None,
    ) -> InferResult:
        """OIP infer: ``inputs`` by name (the dtype gives the datatype: np.float32 for
        FP32), binary tensor data both ways unless ``binary=False`` (JSON);
        ``outputs``: the names to return (None: all); ``timeout_ms``: the deadline."""
        return self.send(
            calls.infer(
                model, inputs, version=version, parameters=parameters, outputs=outputs,
                binary=binary, timeout_ms=timeout_ms, id=id,
            )
        )  # fmt: skip

    def statistics(
        self, model: str | None = None, *, version: str | int | None = None
    ) -> list[dict[str, Any]]:
        """Triton statistics per model version (all models when ``model`` is None)."""
        return self.send(calls.statistics(model, version))

    # --------------------------------------------------------------- task endpoints

    def models(self) -> list[ModelSummary]:
        """``GET /v1/models``: every model, its task, versions, readiness, workers."""
        return self.send(calls.models())

    def classify(
        self,
        model: str,
        images: np.ndarray[Any, Any] | None = None,
        *,
        pngs: Sequence[bytes] | None = None,
        top_k: int | None = None,
        version: str | int | None = None,
        timeout_ms: int | None = None,
    ) -> ClassifyResult:
        """Labels for ``images`` ([N, C, H, W] or [N, H, W] pixels) or ``pngs`` (files)."""
        return self.send(
            calls.classify(
                model, images, pngs=pngs, top_k=top_k, version=version, timeout_ms=timeout_ms
            )
        )

    def forecast(
        self,
        model: str,
        history: np.ndarray[Any, Any] | Sequence[float] | Sequence[Sequence[float]],
        *,
        horizon: int | None = None,
        version: str | int | None = None,
        timeout_ms: int | None = None,
    ) -> ForecastResult:
        """The next ``horizon`` values of one series (1-D) or several (2-D)."""
        return self.send(
            calls.forecast(model, history, horizon=horizon, version=version, timeout_ms=timeout_ms)
        )

    def generate(
        self,
        model: str,
        *,
        count: int = 1,
        seed: int | None = None,
        label: int | None = None,
        format: Literal["png", "array"] = "png",
        version: str | int | None = None,
        timeout_ms: int | None = None,
    ) -> GenerateResult:
        """``count`` generated images (of class ``label`` for a conditional model)."""
        return self.send(
            calls.generate(
                model, count=count, seed=seed, label=label, format=format, version=version,
                timeout_ms=timeout_ms,
            )
        )  # fmt: skip
