"""Swagger UI's own files for ``/docs``, served by the gateway itself: the page works on a
machine with no way out (no CDN).

Contract:

* ``GET /docs/assets/{name}`` answers one of ``ASSETS``, a fixed allow-list (stylesheet,
  script bundle, favicon), from the ``static`` folder of the installed ``swagger-ui-py``
  package (``PACKAGE``; Swagger UI 5, which renders OpenAPI 3.1). No file path is ever
  built from the request: the name is only looked up in ``ASSETS``, so an unlisted name
  (``..``, another file of the package) is a 404 ``{"error": …}``, as is any path with
  a further ``/`` (the router matches one segment).
* Each answer has its content type, ``Cache-Control: public, max-age=86400``, a strong
  ``ETag`` (from the file's SHA-256) and ``X-Content-Type-Options: nosniff``; a request whose
  ``If-None-Match`` names that tag gets 304 with no body. The files are read once, at
  start-up (``SwaggerFiles.installed()`` in the app's lifespan, kept in the gateway's
  state): serving touches no file.
* Without the package, or with a release of it that lacks one of ``ASSETS``, the gateway
  still starts: ``available`` is false and ``missing`` says what to install; the assets
  answer 503 with that message (and ``/docs`` too, see ``openapi.docs``), which is also
  logged as a warning at start-up.
* ``url(name)`` is the URL path of an asset on the gateway, for the docs page.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from services.gateway.responses import error_response, etag_matches
from services.gateway.routing import DirectRoute
from services.gateway.state import gateway, tag

log = logging.getLogger(__name__)

PACKAGE: Final = "swagger-ui-py"
"""The PyPI package whose files are served (an axon dependency)."""
MODULE: Final = "swagger_ui"
"""Its import name; the files are in its ``static`` folder (found without importing it)."""
PREFIX: Final = "/docs/assets/"

ASSETS: Final[Mapping[str, str]] = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",  # RFC 9239's JavaScript type
    "favicon-32x32.png": "image/png",
}
"""The only files served: name → content type."""

CACHE_CONTROL: Final = "public, max-age=86400"


def url(name: str) -> str:
    """The URL of asset ``name`` (one of ``ASSETS``) on this gateway."""
    if name not in ASSETS:
        raise KeyError(f"{name!r} is not a docs asset: one of {sorted(ASSETS)}")
    return PREFIX + name


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class SwaggerFiles:
    """The allow-listed files of ``directory`` (``None``: the package is not installed),
    read into memory when built."""

    def __init__(self, directory: Path | None) -> None:
        absent = (
            sorted(ASSETS)
            if directory is None
            else [n for n in sorted(ASSETS) if not (directory / n).is_file()]
        )
        self.directory = directory
        self.missing: str | None = (
            None
            if not absent
            else f"Swagger UI's files ({', '.join(absent)}) are not installed on this gateway: "
            f"pip install '{PACKAGE}' (a dependency of axon). "
            "The API description is at /openapi.json."
        )
        self._assets: dict[str, Asset] = {}
        if directory is not None and self.missing is None:
            for name, media_type in ASSETS.items():
                body = (directory / name).read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                self._assets[name] = Asset(body, media_type, etag)

    @classmethod
    def installed(cls) -> SwaggerFiles:
        """The files of the installed ``PACKAGE``, located without importing it."""
        spec = importlib.util.find_spec(MODULE)
        locations = list(spec.submodule_search_locations or ()) if spec is not None else []
        files = cls(Path(locations[0]) / "static" if locations else None)
        if files.missing is not None:
            log.warning("%s", files.missing)
        return files

    @property
    def available(self) -> bool:
        return self.missing is None

    def asset(self, name: str) -> Asset | None:
        """Asset ``name``, or ``None`` if it is not one of ``ASSETS`` or the files are
        missing (``self.missing``)."""
        return self._assets.get(name)


async def asset(request: Request) -> Response:
    tag(request, "docs")
    name: str = request.path_params["name"]
    if name not in ASSETS:
        return error_response(404, "no such docs asset; see /docs")
    files = gateway(request).docs
    found = files.asset(name)
    if found is None:
        return error_response(503, files.missing or "Swagger UI's files are missing")
    headers = {
        "Cache-Control": CACHE_CONTROL,
        "ETag": found.etag,
        "X-Content-Type-Options": "nosniff",
    }
    if etag_matches(request.headers.get("if-none-match"), found.etag):
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


routes = [DirectRoute(PREFIX + "{name}", asset, methods=["GET"])]
