"""``/docs`` offline: the page names only the gateway's own URLs, and the gateway serves
every Swagger UI file it names (``services/gateway/docs_ui.py``) with its content type and
cache headers; any other name under ``/docs/assets/`` is a 404 JSON error, and a gateway
without the package says what to install (503, not a 500 or a blank page). No browser
test: the repository has no headless-browser harness."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from services.gateway import docs_ui
from tests.support.inprocess import stack

TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png"}
MIN_BYTES = {".css": 50_000, ".js": 500_000, ".png": 200}  # the real files, not stubs


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def test_docs_page_names_only_the_gateways_own_urls(tmp_path: Path) -> None:
    with stack(tmp_path) as gw:
        page = gw.client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text
    urls = _links(page.text)
    assert set(urls) == {*(docs_ui.url(name) for name in docs_ui.ASSETS), "/openapi.json"}
    assert all(u.startswith("/") and not u.startswith("//") for u in urls)


def test_every_asset_the_page_names_is_served_with_type_and_cache_headers(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, {"AXON_API_KEYS": "docs-key-1"}) as gw:  # open paths: no key needed
        http = gw.client
        assets = [u for u in _links(http.get("/docs").text) if u.startswith(docs_ui.PREFIX)]
        assert {Path(u).suffix for u in assets} == set(TYPES)
        for url in assets:
            response = http.get(url)
            suffix = Path(url).suffix
            assert response.status_code == 200, (url, response.text[:200])
            assert response.headers["content-type"].split(";")[0] == TYPES[suffix], url
            assert len(response.content) >= MIN_BYTES[suffix], url
            assert "max-age=" in response.headers["cache-control"], url
            assert response.headers["x-content-type-options"] == "nosniff"
            again = http.get(url, headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304 and again.content == b"", url
        assert http.get("/openapi.json").status_code == 200
        assert http.get("/v1/models").status_code == 401  # the keys are on


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/%2e%2e",  # name "..": not on the allow-list
        "/docs/assets/..%2f..%2fopenapi.py",  # decoded: two more segments, no route
        "/docs/assets/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/docs/assets/..%5c__init__.py",  # a backslash is just part of an unknown name
        "/docs/assets/swagger-ui.js",  # in the package, not on the allow-list
        "/docs/assets/swagger-editor-bundle.js",
        "/docs/assets/index.html",
        "/docs/assets/LICENSE",
        "/docs/assets/",
        "/docs/assets/swagger-ui.css/x",
    ],
)
def test_traversal_and_unknown_names_are_404_json(tmp_path: Path, path: str) -> None:
    with stack(tmp_path) as gw:
        response = gw.client.get(path)
    assert response.status_code == 404, (path, response.text[:200])
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}


def test_without_the_package_docs_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docs_ui.SwaggerFiles, "installed", lambda: docs_ui.SwaggerFiles(None))
    with stack(tmp_path) as gw:
        page = gw.client.get("/docs")
        asset = gw.client.get(docs_ui.url("swagger-ui-bundle.js"))
        unknown = gw.client.get("/docs/assets/nope.js")
        spec = gw.client.get("/openapi.json")
    assert page.status_code == 503 and f"pip install &#x27;{docs_ui.PACKAGE}&#x27;" in page.text
    assert asset.status_code == 503 and f"pip install '{docs_ui.PACKAGE}'" in asset.json()["error"]
    assert unknown.status_code == 404
    assert spec.status_code == 200


def test_a_release_without_one_of_the_files_is_reported_not_served(tmp_path: Path) -> None:
    (tmp_path / "swagger-ui.css").write_text("x")
    files = docs_ui.SwaggerFiles(tmp_path)
    assert not files.available and files.missing is not None
    assert "swagger-ui-bundle.js" in files.missing and "swagger-ui.css" not in files.missing
    assert files.asset("swagger-ui.css") is None


def test_installed_package_has_every_asset() -> None:
    files = docs_ui.SwaggerFiles.installed()
    assert files.available, files.missing
    assert all(files.asset(name) is not None for name in docs_ui.ASSETS)  # read at once
    with pytest.raises(KeyError):
        docs_ui.url("../openapi.py")
