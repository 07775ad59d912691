"""The web console (``/ui``) in a real browser: headless Chromium driven by Selenium
against the e2e ``stack`` (``axon serve``: Redis, the three model services, a gateway),
a second gateway with API and admin keys on the same Redis, and the ``shadow_gateway``
(digits-cnn versions 1 and 2 on a Redis of their own) for the shadow table. Each panel
is screenshotted into docs/console/ (docs/console.md shows them).

Every test ends by reading the browser's console log: any error there (a script error,
a refused resource, a CSP violation, a failed request) fails the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from services.contract import protocol, redis_client
from services.contract.codec import decode_reply, encode_request
from tests.e2e.conftest import MODELS, SPARE, Stack
from tests.e2e.console.conftest import ADMIN_KEY, API_KEY, SHADOW_MODEL, KeyedGateway
from tests.e2e.payloads import images

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

TIMEOUT_S = 20


def wait(driver: WebDriver, what: str, condition: Callable[[WebDriver], Any]) -> Any:
    return WebDriverWait(driver, TIMEOUT_S).until(condition, message=f"waiting for {what}")


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """Errors in the browser's console since the last call (reading drains the log)."""
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def open_panel(driver: WebDriver, name: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#tabs button[data-panel="{name}"]').click()
    wait(driver, f"panel {name}", lambda d: d.find_element(By.ID, f"panel-{name}").is_displayed())


TABLE_ROWS = """
return Array.from(document.querySelectorAll("#" + arguments[0] + " tbody tr"), (row) => [
  row.dataset.model || "",
  Array.from(row.cells, (cell) => cell.innerText.trim()),
]);
"""


def table_rows(driver: WebDriver, table: str) -> dict[str, list[str]]:
    """The cells of table ``#{table}`` by model, read in one script: the page re-renders
    its tables at every poll, so element handles taken one by one may go stale between."""
    rows: list[list[Any]] = driver.execute_script(TABLE_ROWS, table)
    return {str(model): [str(c) for c in cells] for model, cells in rows}


def fleet_rows(driver: WebDriver) -> dict[str, list[str]]:
    return table_rows(driver, "fleet-table")


@pytest.fixture(scope="module")
def page(stack: Stack, browser: WebDriver) -> WebDriver:
    """The console of the stack's gateway (no keys), loaded once with every model shown."""
    browser.get(f"{stack.url}/ui")
    wait(browser, "every model in the fleet view", lambda d: set(MODELS) <= set(fleet_rows(d)))
    return browser


def test_fleet_view_shows_models_versions_workers_with_no_console_errors(
    page: WebDriver, screenshots: Path
) -> None:
    rows = fleet_rows(page)
    assert set(rows) == {*MODELS, SPARE}
    for model in MODELS:
        assert rows[model][3] == "ready", rows[model]
        assert int(rows[model][4]) >= 1  # workers
    assert rows[SPARE][3] == "not ready"  # known from the repository, no worker
    workers = page.find_elements(By.CSS_SELECTOR, "#workers-table tbody tr")
    served = {w.find_elements(By.TAG_NAME, "td")[0].text for w in workers}
    assert served == {f"{m}:1" for m in MODELS}
    first = workers[0].find_elements(By.TAG_NAME, "td")
    assert first[2].text == "CPU" and "@" in first[3].text  # provider, pid@host
    assert "ready" in page.find_element(By.ID, "gateway-status").text
    assert console_errors(page) == []


def test_drawing_a_one_classifies_it_with_top_k_bars(page: WebDriver, screenshots: Path) -> None:
    open_panel(page, "classify")
    wait(page, "a classifier to choose", lambda d: Select(d.find_element(By.ID, "classify-model"))
         .first_selected_option.get_attribute("value") == "digits-cnn")  # fmt: skip
    canvas = page.find_element(By.ID, "draw")
    stroke = ActionChains(page).move_to_element_with_offset(canvas, 4, -100).click_and_hold()
    for _ in range(10):
        stroke = stroke.move_by_offset(-1, 20)
    stroke.release().perform()  # the end of the stroke sends it
    label = wait(page, "a label", lambda d: d.find_element(By.ID, "classify-label").text)
    assert label in [str(d) for d in range(10)]
    bars = page.find_elements(By.CSS_SELECTOR, "#classify-bars .bar")
    assert len(bars) == 5
    assert bars[0].find_element(By.TAG_NAME, "span").text == label
    page.save_screenshot(str(screenshots / "classify.png"))
    assert console_errors(page) == []


def test_the_forecast_is_plotted_after_the_history(page: WebDriver, screenshots: Path) -> None:
    open_panel(page, "forecast")
    wait(page, "the model's horizon", lambda d: d.find_element(By.ID, "forecast-horizon")
         .get_attribute("max") == "4")  # fmt: skip
    page.find_element(By.ID, "forecast-run").click()
    chart = page.find_element(By.ID, "forecast-chart")
    wait(page, "the forecast line", lambda d: chart.find_elements(By.CSS_SELECTOR, "path.forecast"))
    assert len(chart.find_elements(By.CSS_SELECTOR, "path.history")) == 1
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle.dot")) == 4  # one per step
    assert "next 4" in page.find_element(By.ID, "forecast-values").text
    page.save_screenshot(str(screenshots / "forecast.png"))
    assert console_errors(page) == []


def test_the_generated_grid_has_the_requested_count(page: WebDriver, screenshots: Path) -> None:
    open_panel(page, "generate")
    wait(page, "the generator's labels", lambda d: len(
        Select(d.find_element(By.ID, "generate-label")).options) == 11)  # fmt: skip
    count = page.find_element(By.ID, "generate-count")
    count.clear()
    count.send_keys("12")
    Select(page.find_element(By.ID, "generate-label")).select_by_value("1")
    page.find_element(By.ID, "generate-run").click()
    images = wait(
        page,
        "12 images",
        lambda d: (
            len(found := d.find_elements(By.CSS_SELECTOR, "#generate-grid img")) == 12 and found
        ),
    )
    wait(
        page,
        "the images decoded",
        lambda d: all(
            d.execute_script("return arguments[0].naturalWidth", img) == 8 for img in images
        ),
    )
    assert "label 1" in page.find_element(By.ID, "generate-info").text
    page.save_screenshot(str(screenshots / "generate.png"))
    assert console_errors(page) == []


def test_fleet_view_shows_rates_and_latency_of_the_requests_just_made(
    page: WebDriver, screenshots: Path
) -> None:
    """After the panels' requests (tests above), the next polls show them: requests/s,
    p50/p99 and rows per batch for each model that answered."""
    open_panel(page, "fleet")

    def measured(d: WebDriver) -> bool:
        rows = fleet_rows(d)
        return all(rows[m][6] != "–" and rows[m][7] != "–" and rows[m][9] != "–" for m in MODELS)

    wait(page, "rates and percentiles of every model", measured)
    rows = fleet_rows(page)
    for model in MODELS:
        rate, p50, p99 = (float(rows[model][i]) for i in (6, 7, 8))
        assert rate > 0 and 0 < p50 <= p99, rows[model]
    page.save_screenshot(str(screenshots / "fleet.png"))
    assert console_errors(page) == []


def _dead_letter(redis_url: str, reply_to: str) -> None:
    """A real dead letter of digits-cnn v1, written as a worker writes it
    (``protocol.dead_letter``): a valid classify request that 'failed' four deliveries."""
    body = encode_request({"image": np.full((1, 1, 8, 8), 8.0, np.float32)}, {})

    async def write() -> None:
        redis = redis_client.connect(redis_url, socket_timeout_s=5, connect_timeout_s=5)
        fields = {b"id": b"console-dead-1", b"reply": reply_to.encode(), b"deadline": b"0",
                  b"budget": b"60000", b"body": body}  # fmt: skip
        entry = protocol.StreamEntry("1-1", fields, deliveries=4)
        await protocol.dead_letter(
            redis, "digits-cnn", 1, entry, reason="delivered 4 times (max 3)",
            consumer="console-test", reply=None, reply_ttl_s=60, maxlen=100,
        )  # fmt: skip
        await redis.aclose()  # type: ignore[attr-defined]

    asyncio.run(write())


def _reply(redis_url: str, reply_to: str) -> bytes | None:
    async def pop() -> bytes | None:
        redis = redis_client.connect(redis_url, socket_timeout_s=30, connect_timeout_s=5)
        got = await redis.blpop([reply_to], timeout=20)
        await redis.aclose()  # type: ignore[attr-defined]
        return got[1] if got else None

    return asyncio.run(pop())


def _enter_key(driver: WebDriver, key: str, title: str) -> None:
    dialog = wait(driver, f"the {title} dialog", lambda d: (
        (found := d.find_element(By.ID, "key-dialog")).get_attribute("open") is not None
        and found))  # fmt: skip
    assert dialog.find_element(By.ID, "key-title").text == title
    dialog.find_element(By.ID, "key-input").send_keys(key)
    dialog.find_element(By.ID, "key-submit").click()


def test_dead_letters_listed_and_redriven_with_keys(
    keyed_gateway: KeyedGateway, browser: WebDriver, screenshots: Path
) -> None:
    reply_to = protocol.reply_key("console-test", "digits-cnn", 1)
    _dead_letter(keyed_gateway.redis_url, reply_to)
    browser.get(f"{keyed_gateway.url}/ui#dead-letters")
    _enter_key(browser, API_KEY, "API key")
    row = wait(browser, "the dead letter", lambda d: next((
        r for r in d.find_elements(By.CSS_SELECTOR, "#dlq-table tbody tr")
        if "console-dead-1" in r.text), None))  # fmt: skip
    assert "delivered 4 times (max 3)" in row.find_element(By.CSS_SELECTOR, "td.reason").text
    dead_id = row.get_attribute("data-id")
    wait(browser, "the fleet view polled with the key", lambda d: set(MODELS) <= set(fleet_rows(d)))
    browser.save_screenshot(str(screenshots / "dead-letters.png"))
    row.find_element(By.CSS_SELECTOR, "button.redrive").click()
    _enter_key(browser, ADMIN_KEY, "Admin key")
    message = wait(browser, "the re-drive", lambda d: d.find_element(By.ID, "dlq-message").text)
    assert dead_id in message and protocol.stream_key("digits-cnn", 1) in message
    wait(browser, "the row gone", lambda d: all(
        r.get_attribute("data-id") != dead_id
        for r in d.find_elements(By.CSS_SELECTOR, "#dlq-table tbody tr")))  # fmt: skip
    payload = _reply(keyed_gateway.redis_url, reply_to)  # the worker computed it this time
    assert payload is not None, "no reply: the re-driven entry was not served"
    reply = decode_reply(payload)
    assert reply.ok and reply.id == "console-dead-1", reply.error
    assert reply.outputs is not None and reply.outputs["probabilities"].shape == (1, 10)
    assert console_errors(browser) == []


def test_shadow_table_shows_the_copies_compared_and_their_agreement(
    shadow_gateway: str, browser: WebDriver, screenshots: Path
) -> None:
    """A rule copying every request of digits-cnn to version 2 (the same model, so every
    top-1 label agrees), 20 classify requests, then the fleet view's shadow table: the
    model, shadow version 2 at 100 %, the copies compared (as ``GET …/routing`` counts
    them), 100 % agreement, nothing left uncompared; once the rule is deleted, the same
    figures marked as version 2's."""
    routing, sent = f"/v1/models/{SHADOW_MODEL}/routing", 20
    with httpx.Client(base_url=shadow_gateway, timeout=30) as http:
        rule = {"weights": {"1": 100}, "shadow": {"version": 2, "fraction": 1.0}}
        put = http.put(routing, json=rule)
        assert put.status_code == 200 and put.json()["shadow"]["ready"] is True, put.text
        try:
            for i in range(sent):
                answer = http.post(
                    f"/v1/models/{SHADOW_MODEL}/classify", json={"images": images(1, seed=i)}
                )
                assert answer.status_code == 200 and answer.json()["version"] == 1, answer.text
            browser.get(f"{shadow_gateway}/ui")

            def compared(d: WebDriver) -> list[str] | None:
                if not d.find_element(By.ID, "shadow-table").is_displayed():
                    return None
                row = table_rows(d, "shadow-table").get(SHADOW_MODEL)
                return row if row is not None and int(row[3]) >= sent else None

            row = wait(browser, f"{sent} copies compared in the shadow table", compared)
            stats = http.get(routing).json()["shadow"]["stats"]
            assert stats["compared"] == stats["outcomes"]["compared"] >= sent, stats
            assert stats["top1_agreement"] == 1.0, stats
            # model, shadow version, copied, compared, top-1 agreement, mean difference,
            # primary p50, shadow p50, not compared
            assert row[:5] == [SHADOW_MODEL, "2", "100.0 %", str(stats["compared"]), "100.00 %"]
            assert row[5] == "0.0000" and row[8] == "–", row
            assert float(row[6]) > 0 and float(row[7]) > 0, row
            wait(browser, "the fleet view of both versions", lambda d: len(
                d.find_elements(By.CSS_SELECTOR, "#workers-table tbody tr")) == 2)  # fmt: skip
            browser.save_screenshot(str(screenshots / "shadow.png"))
            assert http.delete(routing).status_code == 200
            # No rule now: this gateway's figures stay, marked as version 2's.
            wait(browser, "the removed rule in the shadow table", lambda d: table_rows(
                d, "shadow-table").get(SHADOW_MODEL, [""] * 4)[1:4]
                == ["2 (rule removed)", "–", row[3]])  # fmt: skip
            assert console_errors(browser) == []
        finally:
            assert http.delete(routing).status_code == 200  # again: no rule is left behind
