"""Async jobs over HTTP: ``Prefer: respond-async`` on an inference endpoint queues the
request as a job (``submit``, called by the handler once the request is validated) and
answers 202; ``GET /v1/jobs/{id}`` says pending / succeeded (with the result) / failed;
``GET /v1/jobs/{id}/result`` answers exactly what the synchronous call would have
(status, headers, body). See docs/gateway.md, "Async jobs".

The job's entry goes to the model version's job stream (``Transport.submit_job``): the
same workers and batches as requests, for the room the request stream leaves. Its
reply is stored with the job in the queue (``services.contract.jobs``), not pushed to
this gateway, so any gateway answers ``GET``, one started after this one died too.
"""

from __future__ import annotations

import contextlib
import json
import time

from starlette.requests import Request
from starlette.responses import Response

from services.contract.codec import Reply, decode_reply
from services.contract.errors import BadEntryError
from services.contract.jobs import NewJob, job_stream_key
from services.contract.protocol import NewEntry, Refused
from services.gateway import results
from services.gateway.errors import (
    BacklogFullError,
    GatewayError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
    WorkerReplyError,
    client_message,
    status_for,
)
from services.gateway.jobs import JobId, JobMeta, wants_async
from services.gateway.middleware.auth import presented_key
from services.gateway.registry import ModelVersion
from services.gateway.responses import JSON, error_response
from services.gateway.routing import DirectRoute
from services.gateway.spans import end_send, start_send
from services.gateway.state import (
    MODEL_VERSION_HEADER,
    GatewayState,
    gateway,
    request_id,
    tag,
    version_header,
)
from services.gateway.transport import queue_errors_as_503

PREFERENCE_APPLIED = {"Preference-Applied": "respond-async"}


def requested(request: Request) -> bool:
    """True when the request asks to be answered asynchronously (``Prefer``)."""
    return wants_async(request.headers.getlist("prefer"))


def _principal(request: Request, state: GatewayState) -> bytes:
    if not state.settings.api_keys:
        return b""
    return presented_key(request.scope["headers"]) or b""


async def submit(
    request: Request, mv: ModelVersion, body: bytes, kind: str, options: dict[str, object]
) -> Response:
    """Queue the validated request (its entry ``body``) as a job of ``mv``; 202 with
    ``Location: /v1/jobs/{id}``. 429 when the job stream is full, 413 for a body over
    the job byte limit, 503 when the queue is down."""
    state = gateway(request)
    settings = state.settings
    if len(body) > settings.job_backlog_bytes:
        raise PayloadTooLargeError(
            f"request encodes to {len(body)} bytes, over the {settings.job_backlog_bytes} "
            "bytes of jobs a model version may have queued (AXON_JOB_BACKLOG_BYTES)"
        )
    job_id = JobId.new(mv.name, mv.version)
    key = job_id.store_key(_principal(request, state))
    now_ms = int(time.time() * 1000)
    meta = JobMeta(kind, options, mv.name, mv.version, now_ms)
    send, carrier = None, {}
    if state.tracing is not None:
        stream = job_stream_key(mv.name, mv.version)
        send = start_send(state.tracing, None, stream, mv.name, mv.version)
        carrier = state.tracing.inject(send)
    entry = NewEntry(
        request_id(request),
        key,
        now_ms + settings.job_timeout_ms,
        body,
        budget_ms=settings.job_timeout_ms,
        traceparent=carrier.get("traceparent", ""),
        tracestate=carrier.get("tracestate", ""),
    )
    limit = settings.job_backlog_limit
    answer: str | Refused | None = None
    try:
        async with queue_errors_as_503(state.transport.name, "refused to queue the job"):
            answer = await state.transport.submit_job(
                mv.name,
                mv.version,
                NewJob(key, meta.encode(), settings.job_ttl_s, entry),
                limit=limit,
                maxlen=max(limit * 4, 1000),
                byte_limit=settings.job_backlog_bytes,
            )
    finally:
        if send is not None:
            if isinstance(answer, str):
                end_send(send, answer)
            else:
                end_send(send, None, "backlog_full" if answer is not None else "queue_error")
    if isinstance(answer, Refused):
        queued = (
            f"{answer.backlog} jobs queued (limit {limit}, AXON_JOB_BACKLOG_LIMIT)"
            if answer.queued_bytes is None
            else f"{answer.queued_bytes} bytes of jobs queued (limit "
            f"{settings.job_backlog_bytes}, AXON_JOB_BACKLOG_BYTES)"
        )
        raise BacklogFullError(
            f"model {mv.name!r} version {mv.version} has {queued}; retry after "
            f"{settings.retry_after_s}s",
            settings.retry_after_s,
        )
    state.metrics.jobs.labels(mv.name, "submitted").inc()
    url = f"/v1/jobs/{job_id}"
    return JSON(
        {"id": str(job_id), "status": "pending", "status_url": url, "result_url": f"{url}/result"},
        status_code=202,
        headers={"Location": url, **PREFERENCE_APPLIED, **version_header(mv)},
    )


class _Failure(Exception):
    """A job's outcome that is an error: ``status``, ``code``, client ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


async def _load(request: Request) -> tuple[GatewayState, JobId, JobMeta, Reply | None]:
    """The job named in the path, for the caller's key; 404 when there is none."""
    state = gateway(request)
    text = request.path_params["job_id"]
    missing = NotFoundError(
        f"no job {text[:80]!r}: unknown, expired (jobs are kept AXON_JOB_TTL_S = "
        f"{state.settings.job_ttl_s} s), or submitted with another API key"
    )
    try:
        job_id = JobId.parse(text)
    except ValueError:
        raise missing from None
    async with queue_errors_as_503(state.transport.name):
        record = await state.transport.get_job(job_id.store_key(_principal(request, state)))
    if record is None:
        raise missing
    try:
        meta = JobMeta.decode(record.meta)
        reply = None if record.reply is None else decode_reply(record.reply)
    except (ValueError, BadEntryError) as exc:
        raise UnavailableError(
            f"job {text!r} is stored in a form this gateway cannot read ({exc})"
        ) from None
    if meta.model != job_id.model or meta.version != job_id.version:
        raise missing
    return state, job_id, meta, reply


async def _outcome(state: GatewayState, meta: JobMeta, reply: Reply) -> Response:
    """The synchronous response for a job's reply; ``_Failure`` for an error outcome.
    503 (raised) while this gateway does not know the model version's metadata."""
    if not reply.ok:
        error = reply.error
        code, message = (error.code, error.message) if error else ("internal", "unknown")
        exc = WorkerReplyError(code, message)
        raise _Failure(status_for(exc), code, client_message(exc))
    try:
        mv = state.registry.lookup(meta.model, meta.version)
    except NotFoundError:
        raise UnavailableError(
            f"the job's model {meta.model!r} version {meta.version} is not known to this "
            "gateway now (no live worker published its metadata); its result is kept, "
            "retry later"
        ) from None
    try:
        return await results.render_job(
            mv, reply.outputs or {}, meta.kind, meta.options, state.image_pool
        )
    except GatewayError:
        raise
    except Exception as exc:  # e.g. NaN in a JSON answer: as the synchronous 500
        raise _Failure(status_for(exc), "internal", client_message(exc)) from exc


async def job_status(request: Request) -> Response:
    """``GET /v1/jobs/{id}``: ``{"status": "pending"}`` (+ Retry-After), ``succeeded``
    with ``result`` (the synchronous JSON body; a binary one is at ``result_url``) or
    ``failed`` with ``error`` and ``http_status``."""
    tag(request, "job")
    state, job_id, meta, reply = await _load(request)
    _tag_model(request, state, meta)
    ident = json.dumps(str(job_id))
    result_url = f"/v1/jobs/{job_id}/result"
    if reply is None:
        state.metrics.job_polls.labels("pending").inc()
        return JSON(
            {"id": str(job_id), "status": "pending"},
            headers={"Retry-After": str(state.settings.retry_after_s)},
        )
    try:
        response = await _outcome(state, meta, reply)
    except _Failure as failure:
        state.metrics.job_polls.labels("failed").inc()
        return JSON(
            {
                "id": str(job_id),
                "status": "failed",
                "http_status": failure.status,
                "error": {"code": failure.code, "message": failure.message},
                "result_url": result_url,
            }
        )
    state.metrics.job_polls.labels("succeeded").inc()
    if response.media_type == JSON.media_type:
        # The synchronous body itself, byte for byte, as ``result``.
        head = f'{{"id":{ident},"status":"succeeded","http_status":200,"result":'
        return Response(
            head.encode() + bytes(response.body) + b"}",
            media_type=JSON.media_type,
            headers=version_header_of(meta),
        )
    return JSON(
        {
            "id": str(job_id),
            "status": "succeeded",
            "http_status": 200,
            "result_url": result_url,
            "content_type": response.media_type,
        },
        headers=version_header_of(meta),
    )


async def job_result(request: Request) -> Response:
    """``GET /v1/jobs/{id}/result``: the synchronous response itself (its status,
    headers and body); 202 with the pending status while the job waits."""
    tag(request, "job_result")
    state, job_id, meta, reply = await _load(request)
    _tag_model(request, state, meta)
    if reply is None:
        return JSON(
            {"id": str(job_id), "status": "pending"},
            status_code=202,
            headers={"Retry-After": str(state.settings.retry_after_s)},
        )
    try:
        return await _outcome(state, meta, reply)
    except _Failure as failure:
        return error_response(failure.status, failure.message)


def version_header_of(meta: JobMeta) -> dict[str, str]:
    return {MODEL_VERSION_HEADER: str(meta.version)}


def _tag_model(request: Request, state: GatewayState, meta: JobMeta) -> None:
    """Metrics labels: the job's model when this gateway knows it (bounded labels)."""
    with contextlib.suppress(NotFoundError):
        tag(request, request.state.endpoint, state.registry.lookup(meta.model, meta.version))


routes = [
    DirectRoute("/v1/jobs/{job_id}", job_status, methods=["GET"]),
    DirectRoute("/v1/jobs/{job_id}/result", job_result, methods=["GET"]),
]
