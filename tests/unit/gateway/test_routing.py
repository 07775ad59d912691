"""``HotRoutes`` serves the hot routes with the app's own error mapping; everything else
(other methods, other paths, unexpected errors) takes the router's path."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.testclient import TestClient

from services.gateway.errors import BadRequestError
from services.gateway.routing import DirectRoute, ErrorHandler, HotRoutes

seen: list[str] = []


async def hot(request: Request) -> Response:
    seen.append("hot:" + request.path_params["name"])
    if request.path_params["name"] == "bad":
        raise BadRequestError("name: bad")
    if request.path_params["name"] == "bug":
        raise RuntimeError("a bug")
    return PlainTextResponse("ok")


async def mapped(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(f"mapped {exc}", status_code=400)


async def last_resort(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("last resort", status_code=500)


def app() -> Starlette:
    routes = [
        DirectRoute("/hot/{name}", hot, methods=["POST"], hot=True),
        DirectRoute("/cold/{name}", hot, methods=["POST"]),
    ]
    handlers: dict[type[BaseException], ErrorHandler] = {
        BadRequestError: mapped,
        Exception: last_resort,
    }
    return Starlette(
        routes=routes,
        middleware=[Middleware(HotRoutes, routes=routes, handlers=handlers)],
        exception_handlers=dict(handlers),
    )


def test_hot_and_cold_routes_answer_alike() -> None:
    client = TestClient(app(), raise_server_exceptions=False)
    for prefix in ("/hot", "/cold"):
        assert client.post(f"{prefix}/x").text == "ok"
        bad = client.post(f"{prefix}/bad")
        assert (bad.status_code, bad.text) == (400, "mapped name: bad")
        bug = client.post(f"{prefix}/bug")
        assert (bug.status_code, bug.text) == (500, "last resort")
        assert client.get(f"{prefix}/x").status_code == 405
    assert client.post("/nowhere").status_code == 404


def test_only_hot_routes_skip_the_router() -> None:
    built = app()
    hot_routes = HotRoutes(built.router, built.routes, {})
    assert [route.path for route in hot_routes.routes] == ["/hot/{name}"]


def test_an_unexpected_error_takes_the_last_resort_path_on_both() -> None:
    """As from the router, a bug reaches ServerErrorMiddleware (which answers 500 and
    re-raises for the server's log): TestClient re-raises it."""
    client = TestClient(app(), raise_server_exceptions=True)
    for prefix in ("/hot", "/cold"):
        with pytest.raises(RuntimeError, match="a bug"):
            client.post(f"{prefix}/bug")
