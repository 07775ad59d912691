"""What routing alone costs per request: Starlette's ``Route``, the gateway's
``DirectRoute``, and a middleware that skips the router (the old infer fast path), each
around the same trivial endpoint, driven as ASGI callables on one event loop.

    python benchmarks/bench_dispatch.py [--requests 50000]

Prints the best of 5 rounds in µs per request (docs/decisions.md, "One router").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.gateway.routing import DirectRoute

PATH = "/v2/models/m/infer"


async def endpoint(request: Request) -> Response:
    return Response(b"ok")


class Bypass:
    """The old fast path: the infer path is answered before the router sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == PATH:
            response = await endpoint(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def error(request: Request, exc: Exception) -> Response:
    return Response(b"", 500)


def build(kind: str) -> Starlette:
    route = Route if kind == "route" else DirectRoute
    routes = [
        route("/v2/models/{model}/infer", endpoint, methods=["POST"]),
        route("/v2", endpoint, methods=["GET"]),
    ]
    middleware = [Middleware(Bypass)] if kind == "bypass" else []
    return Starlette(routes=routes, middleware=middleware, exception_handlers={Exception: error})


async def measure(app: Starlette, requests: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    begin = time.perf_counter()
    for _ in range(requests):
        scope = {"type": "http", "method": "POST", "path": PATH, "root_path": "",
                 "headers": [], "query_string": b"", "state": {}}  # fmt: skip
        await app(scope, receive, send)
    return (time.perf_counter() - begin) / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    args = parser.parse_args(argv)
    results: dict[str, list[float]] = {"bypass": [], "route": [], "direct": []}
    for _ in range(5):
        for kind in results:
            results[kind].append(asyncio.run(measure(build(kind), args.requests)))
    for kind, values in results.items():
        print(f"{kind:<8} {min(values):6.2f} µs/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
