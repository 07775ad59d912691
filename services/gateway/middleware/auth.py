"""Optional API keys (``AXON_API_KEYS``): ``Authorization: Bearer KEY`` or
``X-API-Key: KEY`` (HTTP headers here; the same gRPC metadata in ``grpc_service``); 401
otherwise. Compared in constant time against every key.
Health, metrics, the API docs and the console's page and files (``/ui``: they hold no
data; the page sends the key on its own requests) stay open.

Admin keys (``AXON_ADMIN_KEYS``), the same two headers: when set, changing a routing
rule (PUT/DELETE ``/v1/models/{m}/routing``) or re-driving a dead letter (POST under
``/v1/dead-letters``) needs one; an API key there is 403, no or an unknown key 401.
Reading a rule or the dead letters (GET) takes an API key or an admin key. Without admin
keys, the routing rules are guarded like every other route (an API key when
``AXON_API_KEYS`` is set, else open: docs/gateway.md, "Routing rules (canary)").
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

from starlette.responses import Response
from starlette.types import Scope

from services.gateway.responses import error_response

OPEN_PATHS = ("/v2/health/", "/healthz/", "/metrics", "/docs", "/openapi.json", "/ui")
ADMIN_PREFIX, ADMIN_SUFFIX = "/v1/models/", "/routing"
"""``/v1/models/{m}/routing``: the routing rule admin API."""
DEAD_LETTERS = "/v1/dead-letters"
"""The dead-letter admin API (``console/dead_letters``)."""
WRITES = ("PUT", "DELETE", "POST", "PATCH")


class ApiKeys:
    """The key check of every HTTP request (``edge.Edge`` applies it): ``refusal``
    says whether a request may go on."""

    def __init__(self, keys: Sequence[str], admin_keys: Sequence[str] = ()) -> None:
        self._keys = [key.encode() for key in keys]
        self._admin = [key.encode() for key in admin_keys]

    def refusal(self, scope: Scope) -> Response | None:
        """None when the request may go on, else its 401/403 response."""
        path: str = scope["path"]
        if not (self._keys or self._admin) or path.startswith(OPEN_PATHS):
            return None
        admin_route = (
            path.startswith(ADMIN_PREFIX) and path.endswith(ADMIN_SUFFIX)
        ) or path.startswith(DEAD_LETTERS)
        if admin_route and self._admin and scope["method"] in WRITES:
            what = (
                "re-driving a dead letter" if path.startswith(DEAD_LETTERS)
                else "changing a routing rule"
            )  # fmt: skip
            return self._admin_only(scope, what)
        if not self._keys:
            return None
        presented = _presented(scope)
        if self._allowed(presented) or (admin_route and key_allowed(presented, self._admin)):
            return None
        return error_response(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def _admin_only(self, scope: Scope, what: str) -> Response | None:
        """Changing a routing rule or re-driving a dead letter with admin keys set: an
        admin key, else 403 for an API key, 401 for anything else."""
        presented = _presented(scope)
        if key_allowed(presented, self._admin):
            return None
        if self._allowed(presented):
            return error_response(
                403,
                f"{what} needs an admin key (AXON_ADMIN_KEYS); an API key is not enough",
            )
        return error_response(
            401,
            "missing or invalid admin key: send 'Authorization: Bearer <admin key>' or "
            "'X-API-Key' with a key of AXON_ADMIN_KEYS",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def _allowed(self, presented: bytes | None) -> bool:
        return key_allowed(presented, self._keys)


def key_allowed(presented: bytes | None, keys: Sequence[bytes]) -> bool:
    """Whether ``presented`` is one of ``keys``, compared in constant time against every
    key (HTTP and gRPC share it)."""
    if presented is None:
        return False
    matched = False
    for key in keys:  # no early exit: time does not depend on which key matched
        matched |= hmac.compare_digest(presented, key)
    return matched


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key in ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (lower-case
    names, as ASGI and gRPC metadata give them), else None."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return bytes(value[7:].strip())
        if name == b"x-api-key":
            return bytes(value.strip())
    return None


def _presented(scope: Scope) -> bytes | None:
    return presented_key(scope["headers"])
