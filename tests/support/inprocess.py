"""The gateway in-process: its real app (routes, middlewares, lifespan) on a
``MemoryTransport``, driven with Starlette's ``TestClient``; workers are real ONNX
Runtime sessions of hand-written models (``onnx_models``) answering through the memory
queue. No Redis, no subprocess, no sockets: each test takes milliseconds.

``stack(tmp_path, env=…)`` yields a ``Stack``: ``client`` (TestClient), ``queue`` (the
transport) and ``serve(model)`` / ``register(model)`` to attach a computing worker or a
heartbeat only (a worker that never answers: its entries stay queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from starlette.testclient import TestClient

from services.contract.codec import Reply, decode_request
from services.contract.errors import AxonError, ErrorCode
from services.contract.inputs import check_request
from services.contract.protocol import NewEntry, WorkerInfo
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.gateway.transport_memory import MemoryTransport
from services.runtime.executor import BatchExecutor
from services.runtime.prepare import prepare_inputs
from services.runtime.repository import ModelFiles, ModelRepository
from services.runtime.session import SessionOptions, create_session
from tests.support.onnx_models import (
    write_poison_classifier,
    write_tiny_forecaster,
    write_tiny_generator,
)

CLASSIFIER, FORECASTER, GENERATOR = "poison-cnn", "tiny-lstm", "tiny-gan"


def infer_image(rows: int = 1, *, flat: bool = False, **extra: Any) -> dict[str, Any]:
    """An OIP infer body for the tiny classifier: ``rows`` images [rows, 1, 2, 2] with
    pixels 0..16 (nested, or ``flat``), plus any top-level ``extra`` fields."""
    pixels = (np.arange(rows * 4, dtype=np.float32).reshape(rows, 1, 2, 2) % 17).tolist()
    data = np.asarray(pixels).ravel().tolist() if flat else pixels
    tensor = {"name": "image", "shape": [rows, 1, 2, 2], "datatype": "FP32", "data": data}
    return {"inputs": [tensor], **extra}


def tiny_repository(root: Path, *, classifier_versions: int = 1) -> Path:
    """A model repository of the three hand-written models (one version each; the
    classifier in ``classifier_versions`` identical versions 1..N)."""
    for version in range(1, classifier_versions + 1):
        write_poison_classifier(root, CLASSIFIER, version=version)
    write_tiny_forecaster(root, FORECASTER)
    write_tiny_generator(root, GENERATOR)
    return root


class OnnxHandler:
    """A memory-queue worker: decodes each entry, checks it with the one validator,
    runs the batch in ONNX Runtime (``BatchExecutor``) and answers as a real worker
    does (``invalid_input`` / ``inference_failed`` replies for bad requests)."""

    def __init__(self, files: ModelFiles) -> None:
        self.metadata = files.metadata
        session = create_session(files, SessionOptions(provider="cpu"))
        self._executor = BatchExecutor(session.run)
        self.entries = 0

    async def __call__(self, entries: Sequence[NewEntry]) -> list[Reply]:
        replies: dict[int, Reply] = {}
        runnable: list[tuple[int, dict[str, object]]] = []
        for index, entry in enumerate(entries):
            self.entries += 1
            try:
                request = decode_request(entry.body)
                check_request(self.metadata, request.inputs, request.parameters)
                inputs = prepare_inputs(self.metadata, request.inputs, request.parameters)
            except AxonError as exc:
                replies[index] = Reply.failure(entry.request_id, exc.code, str(exc))
                continue
            runnable.append((index, inputs))  # type: ignore[arg-type]
        result = self._executor.execute([inputs for _, inputs in runnable])  # type: ignore[misc]
        for (index, _), outcome in zip(runnable, result.outcomes, strict=True):
            rid = entries[index].request_id
            replies[index] = (
                Reply.success(rid, outcome.outputs)
                if outcome.outputs is not None
                else Reply.failure(rid, ErrorCode.INFERENCE_FAILED, str(outcome.error))
            )
        await asyncio.sleep(0)
        return [replies[i] for i in range(len(entries))]


@dataclass
class Stack:
    client: TestClient
    queue: MemoryTransport
    repository: ModelRepository

    def info(
        self, model: str, instance: str | None = None, version: int | None = None
    ) -> WorkerInfo:
        metadata = self.repository.load(model, version).metadata
        suffix = "" if version is None else f"-v{version}"
        return WorkerInfo(
            instance or f"{model}-w1{suffix}", model, metadata.version, "CPUExecutionProvider",
            64, metadata.raw, {}, 0, 0,
        )  # fmt: skip

    def serve(self, model: str, version: int | None = None) -> OnnxHandler:
        """A worker that computes ``model``'s requests (its latest version, or
        ``version``), registered at once."""
        handler = OnnxHandler(self.repository.load(model, version))
        self._on_loop(lambda: self.queue.serve(self.info(model, version=version), handler))
        return handler

    def register(self, model: str, version: int | None = None) -> None:
        """A heartbeat for ``model`` with no worker behind it: entries stay queued."""
        instance = f"{model}-idle" if version is None else f"{model}-idle-v{version}"
        self._on_loop(lambda: self.queue.register(self.info(model, instance, version)))

    def heartbeat(self, info: WorkerInfo) -> None:
        """Register exactly ``info`` (a heartbeat, no worker behind it)."""
        self._on_loop(lambda: self.queue.register(info))

    def refresh(self) -> None:
        """Make the gateway's registry see the workers now (instead of at its next tick)."""
        state = self.client.app.state.gateway  # type: ignore[attr-defined]
        self.client.portal.call(state.registry.refresh)  # type: ignore[union-attr]

    def _on_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the app's event loop (the memory queue lives there)."""

        async def run() -> None:
            action()

        self.client.portal.call(run)  # type: ignore[union-attr]
        self.refresh()


@contextlib.contextmanager
def stack(
    root: Path,
    env: Mapping[str, str] | None = None,
    *,
    serve: Sequence[str] = (),
    classifier_versions: int = 1,
    seed: int | None = None,
) -> Iterator[Stack]:
    """The gateway app on a fresh ``MemoryTransport`` with the tiny repository under
    ``root`` (the classifier in ``classifier_versions`` versions); ``serve`` names
    models to start computing workers for (their latest version). ``seed`` seeds the
    gateway's weighted-routing draws (default: unseeded). No gRPC server unless
    ``env`` sets ``AXON_GRPC_PORT``."""
    repo = tiny_repository(root / "models", classifier_versions=classifier_versions)
    settings = GatewaySettings.from_env(
        {"AXON_REDIS_URL": "redis://unused.invalid", "AXON_MODELS_DIR": str(repo),
         "AXON_GATEWAY_INSTANCE": "inproc", "AXON_GRPC_PORT": "0", **(env or {})}
    )  # fmt: skip
    queue = MemoryTransport("inproc")
    draw = random.Random(seed).random if seed is not None else random.random
    app = create_app(settings, transport=lambda _settings: queue, draw=draw)
    with TestClient(app, raise_server_exceptions=False) as client:
        result = Stack(client, queue, ModelRepository(repo))
        for model in serve:
            result.serve(model)
        yield result
