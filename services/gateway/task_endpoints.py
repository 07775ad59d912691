"""Task endpoints for people who do not want to think in tensors, plus the model list.

- ``POST /v1/models/{model}/classify``: ``images`` (nested [N][C][H][W] or [N][H][W]) or
  ``png`` (base64 strings) → top-k labels with probabilities.
- ``POST /v1/models/{model}/forecast``: ``history`` (one series) or ``histories``
  (several, same length) and ``horizon`` (≤ the model's) → forecasts.
- ``POST /v1/models/{model}/generate``: ``count``, ``seed``, ``label`` (conditional
  models), ``format`` ``png`` | ``array`` → images.
- ``GET /v1/models``: models, versions, task and readiness.

With ``Prefer: respond-async`` each inference endpoint answers 202 and queues the
request as an async job (``job_endpoints``); the responses themselves are built in
``results``, for both.

Each accepts an optional ``version`` field (default: the model's routing rule, else the
latest ready version); every answer names its version (``version``, and the
``X-Axon-Model-Version`` header). Image decoding and encoding run in a small per-app
thread pool (``AXON_IMAGE_THREADS``), never on the event loop: a request of large PNGs
must not stall health probes or other requests.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from services.contract.codec import Scalar
from services.contract.inputs import check_request
from services.gateway import job_endpoints, results
from services.gateway.dispatcher import encode_body
from services.gateway.errors import BadRequestError
from services.gateway.fields import int_parameter
from services.gateway.images import PixelLimits, pngs_to_pixels
from services.gateway.oip_codec import to_array
from services.gateway.registry import ModelVersion
from services.gateway.responses import JSON
from services.gateway.routing import DirectRoute
from services.gateway.state import (
    deadline_ms,
    gateway,
    read_json,
    request_id,
    tag,
)

T = TypeVar("T")


async def list_models(request: Request) -> Response:
    tag(request, "models")
    registry = gateway(request).registry
    models = []
    for name, versions in sorted(registry.models().items()):
        models.append(
            {
                "name": name,
                "task": versions[-1].metadata.task,
                "versions": [
                    {"version": mv.version, "ready": mv.ready and registry.reachable,
                     "workers": len(mv.workers)}
                    for mv in versions
                ],
            }
        )  # fmt: skip
    return JSON({"models": models})


async def _prepare(request: Request, task: str) -> tuple[ModelVersion, Mapping[str, Any]]:
    """Resolve the model (must do ``task`` and be ready) and read the JSON body."""
    state = gateway(request)
    tag(request, task)
    model = request.path_params["model"]
    state.registry.lookup(model)  # 404 before reading the body
    doc = await read_json(request)
    if not isinstance(doc, Mapping):
        raise BadRequestError("body: expected a JSON object")
    version = doc.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int | str)):
        raise BadRequestError("version: must be an integer such as 1")
    mv = state.route(model, version, request.headers.get)
    request.state.routed = version is None or version == ""
    tag(request, task, mv)
    if mv.metadata.task != task:
        raise BadRequestError(
            f"model {model!r} does a {mv.metadata.task} task; "
            f"use POST /v1/models/{model}/{mv.metadata.task}"
        )
    return state.registry.ready(model, mv.version), doc


async def _in_image_pool(request: Request, work: Callable[[], T]) -> T:
    """Run CPU-bound image ``work`` in the gateway's image pool (opened in the lifespan,
    AXON_IMAGE_THREADS threads; requests beyond it wait their turn there, off the event
    loop)."""
    pool = gateway(request).image_pool
    return await asyncio.get_running_loop().run_in_executor(pool, work)


async def _run(
    request: Request,
    mv: ModelVersion,
    inputs: dict[str, Any],
    parameters: dict[str, Scalar],
    kind: str,
    options: dict[str, Any],
    render: Callable[[dict[str, np.ndarray[Any, Any]]], Awaitable[Response] | Response],
) -> Response:
    """Queue the request and answer ``render(outputs)``; with ``Prefer: respond-async``
    queue it as a job of ``kind`` instead (202), rendered later with ``options``
    (``results.render_job``: the same function ``render`` calls)."""
    body = encode_body(inputs, parameters)
    if job_endpoints.requested(request):
        return await job_endpoints.submit(request, mv, body, kind, options)
    outputs = await gateway(request).infer(
        mv,
        body,
        routed=request.state.routed,
        request_id=request_id(request),
        timeout_ms=deadline_ms(request, mv, {}),
        arrived=request.state.arrived,
    )
    response = render(outputs)
    return response if isinstance(response, Response) else await response


async def classify(request: Request) -> Response:
    mv, doc = await _prepare(request, "classify")
    meta = mv.metadata
    image = meta.raw.get("image", {})
    channels, height, width = (int(image.get(k, 0)) for k in ("channels", "height", "width"))
    labels = meta.labels
    top_k = int_parameter(doc, "top_k", 1, max(len(labels), 1), default=min(3, len(labels)))
    settings = gateway(request).settings
    max_rows = settings.max_rows
    if "png" in doc and "images" in doc:
        raise BadRequestError("body: send either 'images' or 'png', not both")
    if "png" in doc:
        pngs = doc["png"]
        if not isinstance(pngs, list) or not pngs or not all(isinstance(p, str) for p in pngs):
            raise BadRequestError("png: must be a non-empty list of base64 strings")
        if len(pngs) > max_rows:
            raise BadRequestError(f"png: {len(pngs)} images, at most {max_rows} per request")
        limits = PixelLimits(settings.max_image_pixels, settings.max_request_pixels)
        decode = functools.partial(
            pngs_to_pixels, pngs, channels=channels, height=height, width=width,
            value_range=image.get("value_range", [0, 255]), limits=limits,
        )  # fmt: skip
        pixels = await _in_image_pool(request, decode)
    elif "images" in doc:
        if not isinstance(doc["images"], list) or not doc["images"]:
            raise BadRequestError("images: must be a non-empty nested list [N][C][H][W]")
        pixels = to_array(doc["images"], "FP32", "images")
        if pixels.ndim == 3 and channels == 1:
            pixels = pixels[:, None, :, :]
    else:
        raise BadRequestError("body: 'images' ([N][C][H][W] pixel values) or 'png' is required")
    check_request(meta, {"image": pixels}, {}, max_rows=max_rows)
    return await _run(
        request, mv, {"image": pixels}, {}, "classify", {"top_k": top_k},
        lambda outputs: results.render_classify(mv, outputs, top_k),
    )  # fmt: skip


async def forecast(request: Request) -> Response:
    mv, doc = await _prepare(request, "forecast")
    meta = mv.metadata
    model_horizon = meta.horizon or 1
    horizon = int_parameter(doc, "horizon", 1, model_horizon, default=model_horizon)
    if ("history" in doc) == ("histories" in doc):
        raise BadRequestError("body: send exactly one of 'history' (a list) or 'histories'")
    if "history" in doc:
        series = doc["history"]
        if not isinstance(series, list) or not series:
            raise BadRequestError("history: must be a non-empty list of numbers")
        histories = to_array(series, "FP32", "history")[None, :]
    else:
        series = doc["histories"]
        if not isinstance(series, list) or not series:
            raise BadRequestError("histories: must be a non-empty list of lists of numbers")
        histories = to_array(series, "FP32", "histories")
    if histories.ndim != 2:
        raise BadRequestError(
            "history: must be a flat list of numbers (histories: a list of equal-length lists)"
        )
    check_request(meta, {"history": histories}, {}, max_rows=gateway(request).settings.max_rows)
    return await _run(
        request, mv, {"history": histories}, {}, "forecast", {"horizon": horizon},
        lambda outputs: results.render_forecast(mv, outputs, horizon),
    )  # fmt: skip


async def generate(request: Request) -> Response:
    mv, doc = await _prepare(request, "generate")
    meta = mv.metadata
    fmt = doc.get("format", "png")
    if fmt not in ("png", "array"):
        raise BadRequestError(f"format: {fmt!r} must be 'png' or 'array'")
    seed = doc.get("seed")
    parameters: dict[str, Scalar] = {
        "count": doc.get("count", 1),
        "seed": secrets.randbelow(2**63) if seed is None else seed,
    }
    if doc.get("label") is not None:
        parameters["label"] = doc["label"]
    check_request(meta, {}, parameters, max_rows=gateway(request).settings.max_rows)
    seed, label, pool = parameters["seed"], parameters.get("label"), gateway(request).image_pool
    options = {"seed": seed, "label": label, "format": fmt}
    return await _run(
        request, mv, {}, parameters, "generate", options,
        lambda outputs: results.render_generate(mv, outputs, seed, label, fmt, pool),
    )  # fmt: skip


routes = [
    DirectRoute("/v1/models", list_models, methods=["GET"]),
    DirectRoute("/v1/models/{model}/classify", classify, methods=["POST"]),
    DirectRoute("/v1/models/{model}/forecast", forecast, methods=["POST"]),
    DirectRoute("/v1/models/{model}/generate", generate, methods=["POST"]),
]
