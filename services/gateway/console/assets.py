"""The console's own files (``static/``), served by the gateway: the page works on a
machine with no way out (no CDN, no outside URL in any file).

Contract:

* ``GET /ui`` answers ``index.html``; ``GET /ui/assets/{name}`` answers one of
  ``ASSETS``, a fixed allow-list. No file path is ever built from the request: a name
  not in ``ASSETS`` is a 404 ``{"error": …}``, as is a path with a further ``/`` (the
  router matches one segment).
* Each answer has its content type, ``Cache-Control: no-cache`` (revalidate: a new
  gateway release serves new files at once), a strong ``ETag`` (SHA-256 of the file),
  ``X-Content-Type-Options: nosniff`` and a ``Content-Security-Policy`` allowing only
  the gateway itself; ``If-None-Match`` naming the tag gets 304 with no body.
* The files are read once, when built (``ConsoleFiles.installed()`` in the app's
  lifespan, kept in the gateway state): serving touches no file. A missing file (a
  broken install) does not stop the gateway: ``missing`` names it, ``/ui`` and the
  assets answer 503 with that message, and it is logged at start-up.
* The page and its assets are open (no API key, as ``/docs``): they hold no data. So
  is ``GET /ui/auth.json``, ``{"api_key": bool, "admin_key": bool}``: whether this
  gateway has API keys and admin keys set (what a 401 would tell anyway), so the page
  asks for a key before its first request instead of after a refusal. The page keeps
  the key in the tab's ``sessionStorage`` and sends it as ``X-API-Key`` on every fetch
  (``middleware/auth``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from services.gateway.responses import JSON, error_response, etag_matches
from services.gateway.routing import DirectRoute
from services.gateway.state import gateway, tag

log = logging.getLogger(__name__)

STATIC: Final = "static"
"""The folder of the console's files, next to this module (read by ``installed``)."""
PAGE: Final = "/ui"
PREFIX: Final = "/ui/assets/"
INDEX: Final = "index.html"

ASSETS: Final[Mapping[str, str]] = {
    INDEX: "text/html; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",  # RFC 9239's JavaScript type
    "charts.js": "text/javascript; charset=utf-8",
}
"""The only files served: name → content type (``index.html`` at ``/ui``)."""

HEADERS: Final[Mapping[str, str]] = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


def url(name: str) -> str:
    """The URL of asset ``name`` (one of ``ASSETS``) on this gateway."""
    if name not in ASSETS:
        raise KeyError(f"{name!r} is not a console asset: one of {sorted(ASSETS)}")
    return PAGE if name == INDEX else PREFIX + name


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class ConsoleFiles:
    """The allow-listed files of ``directory``, read into memory when built."""

    def __init__(self, directory: Path) -> None:
        absent = [name for name in sorted(ASSETS) if not (directory / name).is_file()]
        self.missing: str | None = (
            f"the console's files ({', '.join(absent)}) are missing from {directory}: "
            "reinstall axon (they ship in services/gateway/console/static)"
            if absent
            else None
        )
        self._assets: dict[str, Asset] = {}
        if not absent:
            for name, media_type in ASSETS.items():
                body = (directory / name).read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                self._assets[name] = Asset(body, media_type, etag)

    @classmethod
    def installed(cls) -> ConsoleFiles:
        """The files shipped with this package (``STATIC``); a warning if one is missing."""
        files = cls(Path(__file__).resolve().parent / STATIC)
        if files.missing is not None:
            log.warning("%s", files.missing)
        return files

    def asset(self, name: str) -> Asset | None:
        """Asset ``name``; None if it is not one of ``ASSETS`` or the files are missing."""
        return self._assets.get(name)


async def page(request: Request) -> Response:
    return _serve(request, INDEX)


async def asset(request: Request) -> Response:
    name: str = request.path_params["name"]
    if name not in ASSETS or name == INDEX:
        tag(request, "console")
        return error_response(404, "no such console asset; the console is at /ui")
    return _serve(request, name)


async def auth(request: Request) -> Response:
    """Whether this gateway wants an API key, and an admin key for admin operations."""
    tag(request, "console")
    settings = gateway(request).settings
    return JSON(
        {"api_key": bool(settings.api_keys), "admin_key": bool(settings.admin_keys)},
        headers={"Cache-Control": "no-store"},
    )


def _serve(request: Request, name: str) -> Response:
    tag(request, "console")
    files = gateway(request).console
    found = files.asset(name)
    if found is None:
        return error_response(503, files.missing or "the console's files are missing")
    headers = {**HEADERS, "ETag": found.etag}
    if etag_matches(request.headers.get("if-none-match"), found.etag):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


routes = [
    DirectRoute(PAGE, page, methods=["GET"]),
    DirectRoute(PAGE + "/auth.json", auth, methods=["GET"]),
    DirectRoute(PREFIX + "{name}", asset, methods=["GET"]),
]
