"""The web console's gateway side, in-process (``services/gateway/console``): the page
and its allow-listed files (offline: no outside URL), ``/ui/auth.json``, ``GET
/v1/fleet`` from the registry + queue + this gateway's metrics, and the dead-letter API
with its keys. The page itself is tested in a real browser: tests/e2e/console."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from services.contract.protocol import NewEntry
from services.gateway.console import assets
from tests.support.inprocess import CLASSIFIER, FORECASTER, GENERATOR, Stack, stack

KEYS = {"AXON_API_KEYS": "console-api-1", "AXON_ADMIN_KEYS": "console-admin-1"}


def test_page_and_assets_are_served_open_with_headers_and_no_outside_url(
    tmp_path: Path,
) -> None:
    with stack(tmp_path, KEYS) as gw:
        page = gw.client.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        named = set(re.findall(r'(?:src|href)="([^"]+)"', page.text))
        assert named == {"data:,", *(assets.url(n) for n in assets.ASSETS if n != assets.INDEX)}
        for name in assets.ASSETS:
            response = gw.client.get(assets.url(name))
            assert response.status_code == 200, name
            assert response.headers["content-type"] == assets.ASSETS[name]
            assert "default-src 'self'" in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"
            text = response.text.replace("http://www.w3.org/2000/svg", "")
            assert "http://" not in text and "https://" not in text, name
            again = gw.client.get(
                assets.url(name), headers={"If-None-Match": response.headers["etag"]}
            )
            assert again.status_code == 304 and again.content == b""
        assert gw.client.get("/ui/auth.json").json() == {"api_key": True, "admin_key": True}
        assert gw.client.get("/v1/fleet").status_code == 401  # the data needs the key


@pytest.mark.parametrize(
    "path", ["/ui/assets/index.html", "/ui/assets/%2e%2e", "/ui/assets/app.py", "/ui/assets/x/y"]
)
def test_unlisted_asset_names_are_404(tmp_path: Path, path: str) -> None:
    with stack(tmp_path) as gw:
        response = gw.client.get(path)
    assert response.status_code == 404 and "error" in response.json()


def test_missing_files_answer_503_naming_them(tmp_path: Path) -> None:
    files = assets.ConsoleFiles(tmp_path / "nowhere")
    assert files.missing is not None and "console.js" in files.missing
    assert files.asset("console.js") is None


def _classify(gw: Stack, rows: int = 1) -> None:
    images = (np.arange(rows * 4, dtype=np.float32).reshape(rows, 1, 2, 2) % 17).tolist()
    response = gw.client.post(f"/v1/models/{CLASSIFIER}/classify", json={"images": images})
    assert response.status_code == 200, response.text


def test_fleet_shows_models_versions_workers_backlog_and_gateway_latency(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        gw.register(FORECASTER)  # a heartbeat with no worker: its entries stay queued
        for _ in range(3):
            _classify(gw)
        # A deadline long enough to be queued first (1 ms was not always: under load the
        # request's parsing alone took longer, and it was refused before the XADD), short
        # enough to end unanswered.
        queued = gw.client.post(
            f"/v1/models/{FORECASTER}/forecast",
            json={"history": [1, 2, 3, 4]},
            headers={"X-Axon-Timeout-Ms": "300"},
        )
        assert queued.status_code == 504
        doc = gw.client.get("/v1/fleet").json()
    assert doc["gateway"]["instance"] == "inproc" and doc["gateway"]["ready"] is True
    models = {m["name"]: m for m in doc["models"]}
    assert set(models) == {CLASSIFIER, FORECASTER, GENERATOR}
    cnn = models[CLASSIFIER]
    assert cnn["task"] == "classify"
    (v1,) = cnn["versions"]
    assert v1["ready"] is True and v1["backlog"] == 0 and v1["dead_letters"] == 0
    (worker,) = v1["workers"]
    assert worker["provider"] == "CPUExecutionProvider" and worker["max_batch_rows"] == 64
    assert cnn["gateway"]["requests"] == 3 and cnn["gateway"]["errors"] == 0
    buckets = cnn["gateway"]["latency_buckets"]
    assert buckets[-1] == [None, 3] and all(le is not None for le, _ in buckets[:-1])
    lstm = models[FORECASTER]
    assert lstm["versions"][0]["backlog"] == 1  # queued, never answered
    assert lstm["gateway"]["errors"] == 1  # the 504
    assert models[GENERATOR]["versions"][0]["ready"] is False


def test_fleet_answers_without_queue_counts_when_the_queue_is_down(tmp_path: Path) -> None:
    with stack(tmp_path, serve=[CLASSIFIER]) as gw:
        gw.queue.down = True
        doc = gw.client.get("/v1/fleet").json()
    assert all(v["backlog"] is None for m in doc["models"] for v in m["versions"])


def _dead_letter(gw: Stack) -> str:
    """Queue one classify entry on an idle worker's stream and dead-letter it."""
    gw.register(CLASSIFIER)
    entry = NewEntry("rid-dead-1", gw.queue.reply_to(CLASSIFIER, 1), 0, b"body-bytes")

    async def move() -> str:
        entry_id = await gw.queue.submit(
            CLASSIFIER, 1, entry, limit=10, maxlen=10, byte_limit=10**6
        )
        assert isinstance(entry_id, str)
        return gw.queue.dead_letter(CLASSIFIER, 1, entry_id, "delivered 4 times (max 3)")

    return gw.client.portal.call(move)  # type: ignore[union-attr,no-any-return]


def test_dead_letters_list_and_redrive_with_admin_keys(tmp_path: Path) -> None:
    api, admin = {"X-API-Key": "console-api-1"}, {"X-API-Key": "console-admin-1"}
    with stack(tmp_path, KEYS) as gw:
        dead_id = _dead_letter(gw)
        listed = gw.client.get("/v1/dead-letters", headers=api).json()["dead_letters"]
        group = next(g for g in listed if g["model"] == CLASSIFIER)
        assert group["count"] == 1
        (entry,) = group["entries"]
        assert entry["id"] == dead_id and entry["request_id"] == "rid-dead-1"
        assert entry["reason"] == "delivered 4 times (max 3)" and entry["body_bytes"] == 10
        assert gw.client.get("/v1/dead-letters", headers=admin).status_code == 200
        path = f"/v1/dead-letters/{CLASSIFIER}/1/{dead_id}/redrive"
        assert gw.client.post(path).status_code == 401
        refused = gw.client.post(path, headers=api)
        assert refused.status_code == 403 and "re-driving a dead letter" in refused.json()["error"]
        moved = gw.client.post(path, headers=admin)
        assert moved.status_code == 200, moved.text
        assert moved.json()["dead_letter"] == dead_id and moved.json()["entry"]
        assert gw.queue.backlog(CLASSIFIER, 1) == 1  # back in its stream
        assert gw.client.post(path, headers=admin).status_code == 404  # gone from the DLQ
        fleet = gw.client.get("/v1/fleet", headers=api).json()
        cnn = next(m for m in fleet["models"] if m["name"] == CLASSIFIER)
        assert cnn["versions"][0]["dead_letters"] == 0 and cnn["versions"][0]["backlog"] == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/v1/dead-letters/{CLASSIFIER}/1/not-an-id/redrive", 404),
        (f"/v1/dead-letters/{CLASSIFIER}/9/1-0/redrive", 404),
        ("/v1/dead-letters/no-such-model/1/1-0/redrive", 404),
        ("/v1/dead-letters?count=0", 400),
        ("/v1/dead-letters?count=abc", 400),
    ],
)
def test_dead_letter_api_refuses_bad_names(tmp_path: Path, path: str, status: int) -> None:
    with stack(tmp_path) as gw:
        response = gw.client.post(path) if path.endswith("redrive") else gw.client.get(path)
    assert response.status_code == status, response.text
    assert "error" in response.json()
