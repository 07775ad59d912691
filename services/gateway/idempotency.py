"""Idempotent retries: the ``Idempotency-Key`` request header (IETF httpapi draft) on the
inference endpoints (``POST /v2/models/…/infer``, ``/v1/models/{m}/classify|forecast|
generate``).

- The first request with a key claims it in the queue's store (``Transport.
  claim_idempotency``: set-if-absent, a *pending* record with the request's
  fingerprint, a SHA-256 of its path and body), runs as usual, and its response
  (status, headers, body) replaces the record for ``AXON_IDEMPOTENCY_TTL_S``.
- A retry with the same key and the same fingerprint gets that stored response, marked
  ``Idempotent-Replayed: true``, without running the model again; while the first is
  still in flight the retry waits for it (polling the record, up to the request's
  deadline, then 409 + ``Retry-After``). The same key with another path or body: 422.
- What is stored: final answers (2xx and 4xx but 408/429). A retryable outcome (5xx,
  408, 429) or a response over ``AXON_IDEMPOTENCY_MAX_BYTES`` releases the claim
  instead, so the client's retry runs again; a first request that ends without a
  response (the client went away) releases it too.
- Keys are scoped by the caller: with API keys on, a key's record is only ever seen
  with the same API key (the stored name hashes both).

Records are msgpack (never pickle), decoded defensively (``Record.decode``). The store
is Redis (every gateway shares it) or the memory transport's dict; the record's key is
one Redis key (``protocol.idempotency_key``), any slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.contract import protocol
from services.gateway.errors import client_message, status_for
from services.gateway.fields import header
from services.gateway.responses import error_response
from services.gateway.transport import TransportDown, TransportError

log = logging.getLogger(__name__)

HEADER = b"idempotency-key"
REPLAYED = (b"idempotent-replayed", b"true")
TASK_SUFFIXES = ("/classify", "/forecast", "/generate")
POLL_S = (0.02, 0.2)
"""A retry waiting for the first request's answer looks at the record after 20 ms,
then twice as long each time, at most every 200 ms (many waiting retries must not
flood Redis)."""
KEPT_HEADERS = (b"content-type", b"inference-header-content-length", b"x-axon-model-version")
"""Response headers a replay repeats (the rest are the replaying request's own)."""


def applies(scope: Scope) -> bool:
    """True for a POST to an inference endpoint."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    if path.startswith("/v2/models/"):
        return path.endswith("/infer")
    return path.startswith("/v1/models/") and path.endswith(TASK_SUFFIXES)


def check_key(raw: bytes) -> str:
    """The header's value as text; ``ValueError`` saying what to change."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("Idempotency-Key: must be ASCII") from None
    if not 1 <= len(text) <= 255 or not text.isprintable():
        raise ValueError("Idempotency-Key: must be 1 to 255 printable ASCII characters")
    return text


def store_name(principal: bytes, key: str) -> str:
    """The record's key in the store: the caller's credential and the key, hashed."""
    digest = hashlib.sha256(principal + b"\0" + key.encode()).hexdigest()[:40]
    return protocol.idempotency_key(digest)


def fingerprint(path: str, body: bytes) -> str:
    return hashlib.sha256(path.encode() + b"\0" + body).hexdigest()


def storable(status: int, size: int, max_bytes: int) -> bool:
    """A final answer small enough to keep (see the module docstring)."""
    return status < 500 and status not in (408, 429) and size <= max_bytes


@dataclass(frozen=True)
class Record:
    """A key's state: pending (``status`` 0, held by ``owner``) or its response."""

    fingerprint: str
    owner: str
    status: int = 0
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    def encode(self) -> bytes:
        return bytes(
            msgpack.packb(
                [1, self.fingerprint, self.owner, self.status, list(self.headers), self.body]
            )
        )

    @classmethod
    def decode(cls, raw: bytes) -> Record:
        """Parse a stored record; ``ValueError`` for anything else."""
        try:
            version, fp, owner, status, headers, body = msgpack.unpackb(raw, raw=True)
            record = cls(
                fp.decode(),
                owner.decode(),
                int(status),
                tuple((bytes(k), bytes(v)) for k, v in headers),
                bytes(body),
            )
        except (ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
            raise ValueError(f"malformed idempotency record ({exc})") from None
        if version != 1:
            raise ValueError(f"idempotency record version {version!r}")
        return record


@dataclass(frozen=True)
class IdempotencyConfig:
    ttl_s: int
    max_bytes: int
    wait_s: Callable[[Scope], float]
    """How long a retry may wait for the first request's answer (its deadline)."""
    principal: Callable[[Scope], bytes]
    """The caller's credential (its API key), ``b""`` without keys."""


class IdempotencyMiddleware:
    """Applies ``Idempotency-Key`` to the inference endpoints (the module docstring);
    the store is the gateway's transport, read from the app's state per request."""

    def __init__(self, app: ASGIApp, config: IdempotencyConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = header(scope, HEADER) if applies(scope) else None
        if raw is None:
            await self.app(scope, receive, send)
            return
        try:
            key = check_key(raw)
        except ValueError as exc:
            await error_response(400, str(exc))(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except Exception as exc:  # body too large or too slow: the usual answer
            await error_response(status_for(exc), client_message(exc))(scope, receive, send)
            return
        name = store_name(self.config.principal(scope), key)
        mine = Record(fingerprint(scope["path"], body), uuid.uuid4().hex)
        transport = scope["app"].state.gateway.transport
        deadline = time.monotonic() + self.config.wait_s(scope)
        try:
            while True:
                stored = await transport.claim_idempotency(name, mine.encode(), self.config.ttl_s)
                if stored is None:
                    await self._first(scope, body, send, transport, name, mine)
                    return
                found = _decode(stored)
                pause = POLL_S[0]
                while found is not None and not found.status:
                    if found.fingerprint != mine.fingerprint:
                        break
                    if time.monotonic() > deadline:
                        await error_response(
                            409,
                            "Idempotency-Key: the first request with this key is still "
                            "running; retry later for its answer",
                            headers={"Retry-After": "1"},
                        )(scope, receive, send)
                        return
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, POLL_S[1])
                    got = await transport.get_idempotency(name)
                    found = _decode(got) if got is not None else None
                if found is None:
                    continue  # released (the first failed retryably) or expired: claim it
                if found.fingerprint != mine.fingerprint:
                    await error_response(
                        422,
                        "Idempotency-Key: this key was used for a different request (another "
                        "path or body); use a new key for a new request",
                    )(scope, receive, send)
                    return
                await _replay(found, send)
                return
        except (TransportDown, TransportError) as exc:
            await error_response(
                503,
                f"cannot check the Idempotency-Key ({exc}); try again shortly",
                headers={"Retry-After": "1"},
            )(scope, receive, send)

    async def _first(
        self, scope: Scope, body: bytes, send: Send, transport: Any, name: str, mine: Record
    ) -> None:
        """Run the request, pass its response on, and keep it (or release the claim)."""
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        size = 0
        kept = False

        async def capture(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers.extend((k.lower(), v) for k, v in message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= self.config.max_bytes:
                    chunks.append(chunk)
            await send(message)

        try:
            await self.app(scope, _replayed_body(body), capture)
            if status and storable(status, size, self.config.max_bytes):
                done = Record(
                    mine.fingerprint,
                    mine.owner,
                    status,
                    tuple((k, v) for k, v in headers if k in KEPT_HEADERS),
                    b"".join(chunks),
                )
                try:
                    await transport.put_idempotency(name, done.encode(), self.config.ttl_s)
                    kept = True
                except (TransportDown, TransportError) as exc:  # answered; not kept
                    log.warning("could not keep the answer for idempotency key %s: %s", name, exc)
        finally:
            if not kept:
                try:
                    await transport.release_idempotency(name, mine.encode())
                except Exception:  # the claim then expires with its TTL
                    log.warning("could not release idempotency claim %s", name, exc_info=True)


def _decode(raw: bytes) -> Record | None:
    try:
        return Record.decode(raw)
    except ValueError as exc:
        log.error("ignoring a stored idempotency record: %s", exc)
        return None


async def _replay(record: Record, send: Send) -> None:
    headers = [*record.headers, (b"content-length", str(len(record.body)).encode()), REPLAYED]
    await send({"type": "http.response.start", "status": record.status, "headers": headers})
    await send({"type": "http.response.body", "body": record.body})


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (bounded before: ``edge.Edge``, ``body_limit.BodyLimit``)."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _replayed_body(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # like a client that sent everything and waits
        raise AssertionError("unreachable")

    return receive
