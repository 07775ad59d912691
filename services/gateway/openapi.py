"""OpenAPI 3.1 description of the gateway (``/openapi.json``) and a Swagger UI (``/docs``,
its files served by the gateway itself: ``docs_ui``)."""

from __future__ import annotations

import html
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from services.gateway import docs_ui
from services.gateway.responses import JSON
from services.gateway.routing import DirectRoute
from services.gateway.state import gateway, tag

_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
                     "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]},
        "data": {"type": "array", "description": "flat or nested (row-major); required "
                 "unless parameters.binary_data_size is given"},
        "parameters": {"type": "object", "properties": {"binary_data_size": {
            "type": "integer", "minimum": 0, "description": "binary tensor data extension: "
            "the tensor's raw bytes (little-endian, row-major) follow the JSON header, in "
            "input order; then there is no data"}}},
    },
}  # fmt: skip
_ERRORS = {str(code): _ERROR for code in (400, 401, 404, 413, 429, 503, 504)}


def _op(summary: str, body: dict[str, Any] | None = None, ok: str = "success") -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": ok}, **_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation  # fmt: skip


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


_INT = {"type": "integer"}
_NUM_LIST = {"type": "array", "items": {"type": "number"}}
_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_BOOL = {"type": "boolean"}
_INFER = _obj(
    id={"type": "string"},
    parameters=_obj(timeout_ms=_INT, seed=_INT, count=_INT, label=_INT,
                    binary_data_output=_BOOL),
    inputs={"type": "array", "items": _TENSOR},
    outputs={"type": "array", "items": _obj(name={"type": "string"},
                                            parameters=_obj(binary_data=_BOOL))},
)  # fmt: skip
_BINARY = {
    "type": "string",
    "format": "binary",
    "description": "binary tensor data extension: the JSON request (the first "
    "Inference-Header-Content-Length bytes), then the raw bytes of the inputs that have "
    "parameters.binary_data_size, in input order",
}
_INFER_OK = {
    "description": "the inference response: JSON; or, when an output is requested with "
    "parameters.binary_data (or the request has parameters.binary_data_output), "
    "application/octet-stream: the JSON response (Inference-Header-Content-Length bytes; "
    "such outputs carry parameters.binary_data_size instead of data), then their raw "
    "bytes in output order",
    "headers": {"Inference-Header-Content-Length": {"schema": _INT, "description":
                "bytes of JSON at the start of a binary (octet-stream) response"}},
    "content": {"application/json": {"schema": {"type": "object"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}  # fmt: skip
_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "binary tensor data extension: bytes of JSON at the start of the body "
    "(absent or 0: the body is JSON only)",
}


_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "respond-async (RFC 7240): queue the request as an async job and answer "
    '202 with Location: /v1/jobs/{id} (docs/gateway.md, "Async jobs")',
}
_ACCEPTED = {
    "description": "queued as an async job (Prefer: respond-async); poll the Location",
    "headers": {"Location": {"schema": {"type": "string"}},
                "Preference-Applied": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": _obj(
        id={"type": "string"}, status={"type": "string", "enum": ["pending"]},
        status_url={"type": "string"}, result_url={"type": "string"})}},
}  # fmt: skip
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {
    "type": "string", "pattern": r"^[a-z0-9][a-z0-9-]{0,62}\.[1-9][0-9]*\.[0-9a-f]{32}$",
    "description": "{model}.{version}.{token}, as the 202 gave it"}}  # fmt: skip
_JOB_STATUS = _obj(
    id={"type": "string"},
    status={"type": "string", "enum": ["pending", "succeeded", "failed"]},
    http_status=_INT,
    result={"type": "object", "description": "succeeded: the synchronous JSON body"},
    result_url={"type": "string"},
    content_type={"type": "string"},
    error=_obj(code={"type": "string"}, message={"type": "string"}),
)


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "a retry with the same key and body gets the first response "
    "(Idempotent-Replayed: true) without running the model again; the same key with "
    "another body is 422, one still running past the deadline 409 (docs/gateway.md, "
    '"Idempotent retries")',
}


def _async(operation: dict[str, Any]) -> dict[str, Any]:
    """An inference operation: it also takes ``Prefer: respond-async`` (202) and an
    ``Idempotency-Key`` (409, 422)."""
    operation["responses"]["202"] = _ACCEPTED
    operation["responses"]["409"] = _ERROR
    operation["responses"]["422"] = _ERROR
    operation["parameters"] = [*operation.get("parameters", []), _PREFER, _IDEMPOTENCY_KEY]
    return operation


def _infer_op() -> dict[str, Any]:
    operation = _op("Inference (OIP v2, JSON or binary tensor data)", _INFER)
    operation["requestBody"]["content"]["application/octet-stream"] = {"schema": _BINARY}
    operation["responses"]["200"] = _INFER_OK
    operation["parameters"] = [_HEADER_LENGTH]
    return _async(operation)


def _job_ops() -> dict[str, Any]:
    status = _op("Async job status: pending (Retry-After), succeeded with the result, or "
                 "failed with the error and the synchronous status")  # fmt: skip
    status["responses"]["200"]["content"] = {"application/json": {"schema": _JOB_STATUS}}
    result = _op("Async job result: exactly the synchronous response (202 while pending)")
    result["responses"]["202"] = {"description": "pending"}
    return {
        "/v1/jobs/{job_id}": {"get": status, "parameters": [_JOB_ID]},
        "/v1/jobs/{job_id}/result": {"get": result, "parameters": [_JOB_ID]},
    }


def _index_op() -> dict[str, Any]:
    operation = _op(
        "Model repository index: every model version and its state (READY, or "
        "UNAVAILABLE with the reason)",
        _obj(ready={"type": "boolean", "description": "list only the READY ones"}),
    )
    operation["requestBody"]["required"] = False
    return operation


def spec() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v2": {"get": _op("Server metadata")},
        "/v2/health/live": {"get": _op("Liveness (background tasks running)")},
        "/v2/health/ready": {"get": _op("Server readiness (every model has a live worker)")},
        "/healthz/live": {"get": _op("Liveness (same as /v2/health/live)")},
        "/healthz/ready": {"get": _op("Gateway readiness (Redis reachable, listener up)")},
        "/v2/models/stats": {"get": _op("Statistics of every model version")},
        "/v2/repository/index": {"post": _index_op()},
        "/v1/models": {"get": _op("Models, versions, task and readiness")},
        "/v1/models/{model}/classify": {"post": _op("Classify images (top-k labels)", _obj(
            images={"type": "array", "description": "[N][C][H][W] or [N][H][W] pixel values"},
            png={"type": "array", "items": {"type": "string"}, "description": "base64 images"},
            top_k=_INT, version=_INT))},
        "/v1/models/{model}/forecast": {"post": _op("Forecast a series", _obj(
            history=_NUM_LIST, histories={"type": "array", "items": _NUM_LIST},
            horizon=_INT, version=_INT))},
        "/v1/models/{model}/generate": {"post": _op("Generate images", _obj(
            count=_INT, seed=_INT, label=_INT, version=_INT,
            format={"type": "string", "enum": ["png", "array"]}))},
        "/v1/models/{model}/routing": {
            "get": _op("Routing rule as this gateway applies it, readiness, effective weights, "
                       "the shadow's figures"),
            "put": _op("Set the routing rule (canary weights; an admin key if "
                       "AXON_ADMIN_KEYS is set)", _obj(
                weights={"type": "object", "additionalProperties": _INT,
                         "description": 'version → weight, e.g. {"1": 90, "2": 10}'},
                sticky_header={"type": ["string", "null"],
                               "description": "header whose value keeps a client on one "
                               "version"},
                shadow={"type": ["object", "null"],
                        "properties": {"version": _INT,
                                       "fraction": {"type": "number", "exclusiveMinimum": 0,
                                                    "maximum": 1}},
                        "required": ["version"],
                        "description": "copy this share of the rule's requests to a shadow "
                        "version; its answers are compared, never sent"})),
            "delete": _op("Remove the routing rule (an admin key if AXON_ADMIN_KEYS is set)"),
            "parameters": [_MODEL],
        },
        "/metrics": {"get": _op("Prometheus metrics")},
        **_job_ops(),
    }  # fmt: skip
    for suffix, params in (("", [_MODEL]), ("/versions/{version}", [_MODEL, _VERSION])):
        base = "/v2/models/{model}" + suffix
        paths[base] = {"get": _op("Model metadata"), "parameters": params}
        paths[base + "/ready"] = {"get": _op("Model readiness"), "parameters": params}
        paths[base + "/infer"] = {"post": _infer_op(), "parameters": params}
        paths[base + "/config"] = {
            "get": _op("Triton model configuration (for Triton tools)"),
            "parameters": params,
        }
        paths[base + "/stats"] = {"get": _op("Statistics (Triton extension)"),
                                  "parameters": params}  # fmt: skip
    for method in ("put", "delete"):  # an API key where an admin key is needed
        paths["/v1/models/{model}/routing"][method]["responses"]["403"] = _ERROR
    for path in (
        "/v1/models/{model}/classify",
        "/v1/models/{model}/forecast",
        "/v1/models/{model}/generate",
    ):
        paths[path]["parameters"] = [_MODEL]  # fmt: skip
        _async(paths[path]["post"])
    return {
        "openapi": "3.1.0",
        "info": {"title": "Axon gateway", "version": "1",
                 "description": "Open Inference Protocol v2 and task endpoints. Optional "
                 "header X-Axon-Timeout-Ms sets the deadline; X-Request-ID is echoed; "
                 "Prefer: respond-async makes an inference call an async job."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }  # fmt: skip


async def openapi_json(request: Request) -> Response:
    tag(request, "docs")
    return JSON(spec())


DOCS_HTML = f"""<!doctype html><html><head><meta charset="utf-8"><title>Axon gateway</title>
<link rel="icon" type="image/png" href="{docs_ui.url("favicon-32x32.png")}">
<link rel="stylesheet" href="{docs_ui.url("swagger-ui.css")}"></head>
<body><div id="ui"></div><script src="{docs_ui.url("swagger-ui-bundle.js")}"></script>
<script>SwaggerUIBundle({{url: "/openapi.json", dom_id: "#ui", validatorUrl: null}});</script>
<noscript>The API description is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>"""
"""Swagger UI from the gateway's own ``/docs/assets/`` (``docs_ui``): no outside host, not
even Swagger's online validator (``validatorUrl: null``)."""


async def docs(request: Request) -> Response:
    tag(request, "docs")
    files = gateway(request).docs
    if not files.available:  # 503 that says what to install, not a blank page
        message = html.escape(files.missing or "")
        return HTMLResponse(f"<!doctype html><title>Axon gateway</title><p>{message}</p>", 503)
    return HTMLResponse(DOCS_HTML)


routes = [
    DirectRoute("/openapi.json", openapi_json, methods=["GET"]),
    DirectRoute("/docs", docs, methods=["GET"]),
    *docs_ui.routes,
]
