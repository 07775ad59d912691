"""Browser fixtures for the console tests: a real Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``make tools``) driven by Selenium, a gateway with
API and admin keys on the e2e ``stack``'s Redis (its workers answer it), and a shadow
stack (its own Redis, gateway and queue workers of digits-cnn versions 1 and 2), each
one per module. Screenshots go to docs/console/.

A missing browser is a failure that says what to install, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from services.processes import terminate
from services.runtime.redis_server import free_port
from tests.e2e.conftest import STACK_ENV, ManagedRedis, Stack
from tests.e2e.test_versions import _add_version
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


@contextmanager
def _running(
    argv: Sequence[str], env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process writing to ``log``, SIGTERMed (then killed) at the end."""
    with log.open("wb") as out:  # the child keeps its copy
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        terminate(process, timeout_s=15)


def _alive(process: subprocess.Popen[bytes], log: Path) -> None:
    assert process.poll() is None, log.read_text(errors="replace")[-3000:]


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
    url = f"http://127.0.0.1:{port}"
    gateway_argv = [sys.executable, "-m", "services.gateway", "--port", str(port)]
    with _running(gateway_argv, env, log) as process:

        def up() -> bool:
            _alive(process, log)
            try:
                ready = httpx.get(
                    f"{url}/v2/models/digits-cnn/ready", headers={"X-API-Key": API_KEY}
                )
            except httpx.HTTPError:
                return False
            return ready.status_code == 200

        wait_for(up, timeout_s=60, what="keyed gateway ready")
        yield KeyedGateway(url, stack.redis.url)


SHADOW_MODEL = "digits-cnn"


@pytest.fixture(scope="module")
def shadow_gateway(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a gateway (no keys) whose ``SHADOW_MODEL`` has versions 1 and 2 (a copy
    of 1, as ``test_versions._add_version`` makes it), each with a live queue worker
    (``python -m services.runtime.standalone``: no BentoML, up in seconds), on a Redis
    of its own: the e2e ``stack``'s gateway never sees version 2 (its registry remembers
    every version it saw) and no other test sees the routing rule (stored in Redis).
    Yielded once both versions are ready."""
    root = tmp_path_factory.mktemp("console-shadow")
    repo, logs = root / "models", root / "logs"
    source = model_repo / SHADOW_MODEL / "1"
    shutil.copytree(source, repo / SHADOW_MODEL / "1")
    _add_version(repo, source, 2)
    logs.mkdir()
    redis = ManagedRedis()
    redis.start()
    env = {
        **os.environ, **STACK_ENV, "AXON_REDIS_URL": redis.url, "AXON_MODELS_DIR": str(repo),
        "AXON_PROVIDER": "cpu",
    }  # fmt: skip
    for name in ("AXON_API_KEYS", "AXON_ADMIN_KEYS", "AXON_VERSION_POLICY"):
        env.pop(name, None)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    worker_argv = [sys.executable, "-m", "services.runtime.standalone", "classifier"]
    children = {
        "gateway": ([sys.executable, "-m", "services.gateway", "--port", str(port)], env),
        **{
            f"worker-v{v}": (worker_argv, {**env, "AXON_CLASSIFIER_MODEL_VERSION": str(v),
                                           "AXON_INSTANCE": f"console-shadow-v{v}"})
            for v in (1, 2)
        },
    }  # fmt: skip
    try:
        with ExitStack() as running:
            started = {
                logs / f"{name}.log": running.enter_context(
                    _running(argv, child_env, logs / f"{name}.log")
                )
                for name, (argv, child_env) in children.items()
            }

            def ready() -> bool:
                for log, process in started.items():
                    _alive(process, log)
                try:
                    routing = httpx.get(f"{url}/v1/models/{SHADOW_MODEL}/routing", timeout=2)
                except httpx.HTTPError:
                    return False
                if routing.status_code != 200:
                    return False
                versions = {v["version"]: v["ready"] for v in routing.json()["versions"]}
                return versions == {1: True, 2: True}

            wait_for(ready, timeout_s=60, what="the shadow stack's versions 1 and 2 ready")
            yield url
    finally:
        redis.stop()


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
