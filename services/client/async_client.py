"""``AsyncAxonClient``: the gateway's HTTP API over an ``httpx.AsyncClient``; the same
methods as ``AxonClient``, awaited."""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from .retry import acall as call_with_retries

T = TypeVar("T")


class AsyncHTTP(Protocol):
    """The part of ``httpx.AsyncClient`` the client uses."""

    async def request(
        self, method: str, url: str, *, content: bytes | None = ..., headers: Mapping[str, str]
    ) -> Response: ...

    async def aclose(self) -> None: ...


class AsyncAxonClient(ClientBase):
    """Axon's gateway over HTTP, asynchronous:
    ``async with AsyncAxonClient(url, api_key=K) as axon: await axon.infer(...)``.

    ``http``: an ``httpx.AsyncClient`` (or look-alike; over ``httpx.ASGITransport``
    it calls an ASGI app in-process) to send through instead of the client's own; it
    is not closed by ``aclose``, and its own timeout applies. 429 and 503 answers are
    tried again under ``retry`` (``Retry-After`` honoured); any other error status
    raises ``AxonHTTPError`` at once. ``clock``, ``sleep`` (awaited) and ``random``
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
        http: AsyncHTTP | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
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
        self._http: AsyncHTTP = httpx.AsyncClient(timeout=timeout) if http is None else http
        self._sleep = sleep

    async def __aenter__(self) -> AsyncAxonClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's own connections (an injected ``http`` stays open)."""
        if self._owned:
            await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send ``call`` (retried under the policy) and read its answer."""
        url, headers = self._url(call), self._request_headers(call)

        async def once() -> Response:
            return await self._http.request(call.method, url, content=call.content, headers=headers)

        response = await call_with_retries(
            once,
            answer,
            self._policy(call),
            clock=self._clock,
            sleep=self._sleep,
            random=self._random,
        )
        return call.result(response)

    # ------------------------------------------------------------------ OIP v2

    async def server_metadata(self) -> ServerMetadata:
        return await self.send(calls.server_metadata())

    async def server_live(self) -> bool:
        return await self.send(calls.server_live())

    async def server_ready(self) -> bool:
        """Every model the gateway knows has a ready version (OIP server readiness)."""
        return await self.send(calls.server_ready())

    async def model_metadata(
        self, model: str, *, version: str | int | None = None
    ) -> ModelMetadata:
        return await self.send(calls.model_metadata(model, version))

    async def model_ready(self, model: str, *, version: str | int | None = None) -> bool:
        return await self.send(calls.model_ready(model, version))

    async def infer(
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
        return await self.send(
            calls.infer(
                model, inputs, version=version, parameters=parameters, outputs=outputs,
                binary=binary, timeout_ms=timeout_ms, id=id,
            )
        )  # fmt: skip

    async def statistics(
        self, model: str | None = None, *, version: str | int | None = None
    ) -> list[dict[str, Any]]:
        """Triton statistics per model version (all models when ``model`` is None)."""
        return await self.send(calls.statistics(model, version))

    # --------------------------------------------------------------- task endpoints

    async def models(self) -> list[ModelSummary]:
        """``GET /v1/models``: every model, its task, versions, readiness, workers."""
        return await self.send(calls.models())

    async def classify(
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
        return await self.send(
            calls.classify(
                model, images, pngs=pngs, top_k=top_k, version=version, timeout_ms=timeout_ms
            )
        )

    async def forecast(
        self,
        model: str,
        history: np.ndarray[Any, Any] | Sequence[float] | Sequence[Sequence[float]],
        *,
        horizon: int | None = None,
        version: str | int | None = None,
        timeout_ms: int | None = None,
    ) -> ForecastResult:
        """The next ``horizon`` values of one series (1-D) or several (2-D)."""
        return await self.send(
            calls.forecast(model, history, horizon=horizon, version=version, timeout_ms=timeout_ms)
        )

    async def generate(
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
        return await self.send(
            calls.generate(
                model, count=count, seed=seed, label=label, format=format, version=version,
                timeout_ms=timeout_ms,
            )
        )  # fmt: skip
