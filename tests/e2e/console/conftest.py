"""Browser fixtures for the console tests: a real Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``make tools``) driven by Selenium, and a gateway with
API and admin keys on the e2e ``stack``'s Redis (its workers answer it), both one per
module. Screenshots go to docs/console/.

A missing browser is a failure that says what to install, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from services.runtime.redis_server import free_port
from tests.e2e.conftest import STACK_ENV, Stack
from tests.support.redis import wait_for

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

API_KEY, ADMIN_KEY = "console-api-key-1", "console-admin-key-1"
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "console"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


@dataclass(frozen=True)
class KeyedGateway:
    url: str
    redis_url: str


@pytest.fixture(scope="module")
def keyed_gateway(
    stack: Stack, e2e_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KeyedGateway]:
    """``python -m services.gateway`` with API and admin keys, on the stack's Redis."""
    port = free_port()
    log = tmp_path_factory.mktemp("console-gateway") / "gateway.log"
    env = {
        **os.environ, **STACK_ENV, "AXON_REDIS_URL": stack.redis.url,
        "AXON_MODELS_DIR": str(e2e_repo), "AXON_API_KEYS": API_KEY, "AXON_ADMIN_KEYS": ADMIN_KEY,
    }  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.gateway", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            ready = httpx.get(f"{url}/v2/models/digits-cnn/ready", headers={"X-API-Key": API_KEY})
        except httpx.HTTPError:
            return False
        return ready.status_code == 200

    try:
        wait_for(up, timeout_s=60, what="keyed gateway ready")
        yield KeyedGateway(url, stack.redis.url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _find_browser() -> tuple[str, str]:
    binary = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which(DRIVER)
    if binary is None or driver is None:
        pytest.fail(
            "the console's browser tests need Chromium and its driver (Debian packages "
            f"'chromium' and 'chromium-driver'; found browser={binary}, driver={driver}): "
            "run `make tools`, which installs them with apt-get",
            pytrace=False,
        )
    return binary, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """A headless Chromium (Selenium WebDriver) with its console log kept."""
    binary, driver_path = _find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save their screenshots: a temporary folder, or ``docs/console``
    (the pictures in docs/console.md) with ``AXON_UPDATE_SCREENSHOTS=1`` — a test run
    leaves the tracked files alone unless asked (``make console-screenshots``)."""
    if os.environ.get("AXON_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("console-screenshots")
