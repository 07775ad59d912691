"""Open Inference Protocol v2 REST routes (KServe v2) and Triton's statistics extension."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from services.gateway import job_endpoints, results
from services.gateway.dispatcher import encode_body
from services.gateway.errors import BadRequestError
from services.gateway.oip_codec import model_config, parse_infer
from services.gateway.registry import ModelVersion
from services.gateway.responses import JSON
from services.gateway.routing import DirectRoute
from services.gateway.state import (
    deadline_ms,
    gateway,
    parse_json,
    read_infer,
    request_id,
    tag,
)

EXTENSIONS = ["binary_tensor_data", "statistics", "model_repository"]

try:
    __version__ = version("axon")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


async def server_metadata(request: Request) -> Response:
    tag(request, "server_metadata")
    return JSON({"name": "axon", "version": __version__, "extensions": EXTENSIONS})


async def live(request: Request) -> Response:
    """Live while the gateway's background tasks (registry refresh, reply listener) run.
    They survive every error, so one that ended is a bug: 503 makes Kubernetes' liveness
    probe restart the process instead of leaving a gateway that answers 503 forever."""
    tag(request, "live")
    dead = gateway(request).dead_tasks()
    if dead:
        return JSON({"live": False, "stopped": dead}, status_code=503)
    return JSON({"live": True})


async def ready(request: Request) -> Response:
    """OIP server readiness: the gateway is ready (``gateway_ready``) and every model it
    knows has a version with a live worker."""
    tag(request, "ready")
    state = gateway(request)
    ok = state.ready and all(
        any(mv.ready for mv in versions) for versions in state.registry.models().values()
    )
    return JSON({"ready": ok}, status_code=200 if ok else 503)


async def gateway_ready(request: Request) -> Response:
    """``/healthz/ready``, Kubernetes' readiness probe of the gateway itself: Redis
    answers and the reply listener is connected. Model readiness is not part of it (a
    gateway that cannot reach a model's workers is still the right place for requests:
    they queue, or get 503 per model)."""
    tag(request, "gateway_ready")
    ok = gateway(request).ready
    return JSON({"ready": ok}, status_code=200 if ok else 503)


def _version(request: Request) -> str | None:
    version: str | None = request.path_params.get("version")
    return version


def _metadata_json(mv: ModelVersion, versions: list[str]) -> dict[str, Any]:
    meta = mv.metadata
    return {
        "name": meta.name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [spec.as_dict() for spec in meta.inputs],
        "outputs": [spec.as_dict() for spec in meta.outputs],
        "parameters": {
            "task": meta.task,
            "version": meta.version,
            "ready": mv.ready,
            **{k: meta.raw[k] for k in ("labels", "image", "window", "horizon",
                                        "latent_size", "conditional", "num_classes")
               if k in meta.raw},
        },
    }  # fmt: skip


async def model_metadata(request: Request) -> Response:
    state = gateway(request)
    model = request.path_params["model"]
    tag(request, "model_metadata")
    mv = state.registry.lookup(model, _version(request))
    tag(request, "model_metadata", mv)
    versions = [str(v.version) for v in state.registry.models()[model]]
    return JSON(_metadata_json(mv, versions if _version(request) is None else [str(mv.version)]))


async def model_config_endpoint(request: Request) -> Response:
    """Triton's model configuration (``oip_codec.model_config``), for Triton tools."""
    state = gateway(request)
    tag(request, "model_config")
    mv = state.registry.lookup(request.path_params["model"], _version(request))
    tag(request, "model_config", mv)
    return JSON(model_config(mv.metadata, state.settings.max_rows))


async def model_ready(request: Request) -> Response:
    state = gateway(request)
    tag(request, "model_ready")
    mv = state.registry.lookup(request.path_params["model"], _version(request))
    tag(request, "model_ready", mv)
    ok = mv.ready and state.registry.reachable
    body = {"name": mv.name, "version": str(mv.version), "ready": ok}
    return JSON(body, status_code=200 if ok else 503)


async def infer(request: Request) -> Response:
    state = gateway(request)
    tag(request, "infer")
    mv = state.route(request.path_params["model"], _version(request), request.headers.get)
    tag(request, "infer", mv)
    if not mv.ready or not state.registry.reachable:
        mv = state.registry.ready(mv.name, mv.version)  # raises the right 503
    doc, data = await read_infer(request)
    parsed = parse_infer(doc, mv.metadata, max_rows=state.settings.max_rows, binary_data=data)
    # The parsed JSON is many times the body, and binary inputs are views on the body:
    # neither is kept across the await, only the encoded entry.
    del doc, data
    timeout = deadline_ms(request, mv, parsed.parameters)
    oip_id, selection, as_raw = parsed.id, parsed.outputs, parsed.binary_outputs
    entry_body = encode_body(parsed.inputs, parsed.parameters)
    del parsed
    if job_endpoints.requested(request):
        options = results.options_for_infer(oip_id, selection, as_raw)
        return await job_endpoints.submit(request, mv, entry_body, "infer", options)
    outputs = await state.infer(
        mv,
        entry_body,
        routed=_version(request) is None,
        request_id=request_id(request),
        timeout_ms=timeout,
        arrived=request.state.arrived,
    )
    return results.render_infer(mv, outputs, oip_id, selection, as_raw)


async def model_stats(request: Request) -> Response:
    """Triton statistics extension: per version, summed over live workers."""
    state = gateway(request)
    tag(request, "stats")
    model = request.path_params.get("model")
    version = _version(request)
    if model is not None:
        tag(request, "stats", state.registry.lookup(model, version))
    return JSON({"model_stats": state.registry.statistics(model, version)})


async def repository_index(request: Request) -> Response:
    """Model repository extension, read side: every known model version and its state
    (READY, or UNAVAILABLE with a reason); body ``{"ready": true}`` (optional) keeps only
    the READY ones."""
    tag(request, "repository_index")
    ready_only = False
    body = await request.body()
    if body.strip():
        doc = parse_json(body)
        if not isinstance(doc, dict):
            raise BadRequestError('body: expected a JSON object such as {"ready": true}')
        ready_only = doc.get("ready", False)
        if not isinstance(ready_only, bool):
            raise BadRequestError(f"ready: must be true or false, got {ready_only!r}")
    entries = gateway(request).registry.index(ready_only=ready_only)
    return JSON([entry.as_dict() for entry in entries])


routes = [
    # Inference first: the router tries routes in order and these are the hot path.
    # (No other route's pattern matches a path ending in /infer.)
    DirectRoute("/v2/models/{model}/infer", infer, methods=["POST"], hot=True),
    DirectRoute("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"], hot=True),
    DirectRoute("/v2", server_metadata, methods=["GET"]),
    DirectRoute("/v2/health/live", live, methods=["GET"]),
    DirectRoute("/v2/health/ready", ready, methods=["GET"]),
    DirectRoute("/healthz/live", live, methods=["GET"]),
    DirectRoute("/healthz/ready", gateway_ready, methods=["GET"]),
    DirectRoute("/v2/models/stats", model_stats, methods=["GET"]),
    DirectRoute("/v2/models/{model}", model_metadata, methods=["GET"]),
    DirectRoute("/v2/models/{model}/versions/{version}", model_metadata, methods=["GET"]),
    DirectRoute("/v2/models/{model}/ready", model_ready, methods=["GET"]),
    DirectRoute("/v2/models/{model}/versions/{version}/ready", model_ready, methods=["GET"]),
    DirectRoute("/v2/models/{model}/config", model_config_endpoint, methods=["GET"]),
    DirectRoute(
        "/v2/models/{model}/versions/{version}/config", model_config_endpoint, methods=["GET"]
    ),
    DirectRoute("/v2/models/{model}/stats", model_stats, methods=["GET"]),
    DirectRoute("/v2/models/{model}/versions/{version}/stats", model_stats, methods=["GET"]),
    DirectRoute("/v2/repository/index", repository_index, methods=["POST"]),
]
