"""Versions side by side under a real ``axon serve --versions latest:2`` (its own private
Redis) on a temp repository with digits-cnn v1 and v2 (a copy of v1 with its version
changed), polled every 0.5 s:

1. Both versions are served by their own model service: each version's OIP ready is
   200, ``/v1/models`` lists both ready, each answers an infer, the banner names them.
2. A v3 copied in half-written (model.onnx, no metadata.json yet) is skipped with one
   log line; once its metadata.json is written it starts without a restart and becomes
   ready; v1 leaves the selection and drains away once v3 is ready (ready → 503, no
   worker in ``/v1/models``); v2 stays.

At the end ``axon serve`` is SIGTERMed: status 0 and nothing left behind.

0. A bad policy (``--versions``, ``AXON_VERSION_POLICY``, ``--versions-file``) stops
   ``axon serve`` at once, naming the option, before anything starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from services.runtime.redis_server import free_port
from tests.e2e.conftest import STACK_ENV
from tests.e2e.payloads import infer_image
from tests.support.redis import wait_for

MODEL = "digits-cnn"
ENV = {
    **STACK_ENV,
    "AXON_HEARTBEAT_TTL_MS": "3000",
    "AXON_CLAIM_TIMEOUT_MS": "2000",
    "AXON_PROVIDER": "cpu",
    "AXON_REPOSITORY_POLL_S": "0.5",
}


def _add_version(repo: Path, source: Path, version: int, *, metadata: bool = True) -> Path:
    """``repo/digits-cnn/{version}``: ``source``'s files with the version changed."""
    folder = repo / MODEL / str(version)
    folder.mkdir(parents=True)
    shutil.copy2(source / "model.onnx", folder / "model.onnx")
    if metadata:
        _write_metadata(source, folder, version)
    return folder


def _write_metadata(source: Path, folder: Path, version: int) -> None:
    meta = json.loads((source / "metadata.json").read_text())
    meta["version"] = version
    partial = folder / "metadata.json.tmp"
    partial.write_text(json.dumps(meta))
    partial.rename(folder / "metadata.json")  # as a careful publisher does


@dataclass
class Versions:
    """A running ``axon serve`` on its own repository."""

    url: str
    process: subprocess.Popen[bytes]
    repo: Path
    source: Path
    log_dir: Path

    @property
    def out(self) -> str:
        return (self.log_dir / "serve.out").read_text(errors="replace")

    def status(self, path: str) -> int:
        assert self.process.poll() is None, self.out[-3000:]
        try:
            return httpx.get(self.url + path, timeout=5).status_code
        except httpx.HTTPError:
            return 0

    def models(self) -> dict[int, dict[str, Any]]:
        """version → its entry in ``GET /v1/models``."""
        body = httpx.get(f"{self.url}/v1/models", timeout=5).json()
        entry = next(m for m in body["models"] if m["name"] == MODEL)
        return {v["version"]: v for v in entry["versions"]}


@pytest.fixture(scope="module")
def served(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Versions]:
    repo = tmp_path_factory.mktemp("versions-repo")
    source = model_repo / MODEL / "1"
    shutil.copytree(source, repo / MODEL / "1")
    _add_version(repo, source, 2)
    log_dir = tmp_path_factory.mktemp("versions-logs")
    port = free_port()
    env = {**os.environ, **ENV}
    for name in ("AXON_REDIS_URL", "AXON_API_KEYS", "AXON_VERSION_POLICY"):
        env.pop(name, None)
    out = (log_dir / "serve.out").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--port", str(port),
         "--grpc-port", "0", "--models-dir", str(repo), "--log-dir", str(log_dir),
         "--versions", "latest:2"],
        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    running = Versions(f"http://127.0.0.1:{port}", process, repo, source, log_dir)
    started: list[psutil.Process] = []
    try:
        wait_for(
            lambda: "Axon is ready" in running.out or process.poll() is not None,
            timeout_s=180,
            what="axon serve ready",
        )
        assert process.poll() is None, running.out[-3000:]
        started = psutil.Process(process.pid).children(recursive=True)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            status = process.wait()
        out.close()
        leftovers = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for child in leftovers:
            child.kill()
    assert status == 0, running.out[-3000:]
    assert not leftovers, f"axon serve left processes behind: {leftovers}"


@pytest.mark.parametrize(
    ("args", "env", "status", "message"),
    [
        (["--versions", "latest:0"], {}, 2,
         "argument --versions: 'latest:0': N must be a positive integer"),
        ([], {"AXON_VERSION_POLICY": "newest"}, 1,
         "AXON_VERSION_POLICY 'newest': expected latest:N"),
        (["--versions-file", "{file}"], {}, 1, "resnet is not a model served here"),
    ],
)  # fmt: skip
def test_0_a_bad_policy_stops_at_once(
    model_repo: Path, tmp_path: Path, args: list[str], env: dict[str, str], status: int,
    message: str,
) -> None:  # fmt: skip
    versions_file = tmp_path / "versions.json"
    versions_file.write_text('{"resnet": "all"}')
    argv = [a.replace("{file}", str(versions_file)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", "--port", str(free_port()),
         "--models-dir", str(model_repo), "--log-dir", str(tmp_path / "logs"), *argv],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert not list((tmp_path / "logs").glob("*.log")), "nothing should have been started"


def test_1_both_versions_run_side_by_side(served: Versions) -> None:
    assert served.status(f"/v2/models/{MODEL}/versions/1/ready") == 200
    assert served.status(f"/v2/models/{MODEL}/versions/2/ready") == 200
    listed = served.models()
    assert sorted(listed) == [1, 2], listed
    assert all(v["ready"] and v["workers"] == 1 for v in listed.values()), listed
    for version in (1, 2):
        reply = httpx.post(
            f"{served.url}/v2/models/{MODEL}/versions/{version}/infer",
            json=infer_image(),
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["model_version"] == str(version)
    out = served.out
    assert re.search(r"classifier-v1 +digits-cnn v1 → http://127\.0\.0\.1:\d+", out), out
    assert re.search(r"classifier-v2 +digits-cnn v2 → http://127\.0\.0\.1:\d+", out), out
    assert "Versions: digits-cnn v1, v2 (latest:2)" in out, out
    assert (served.log_dir / "classifier-v1.log").is_file()


def test_1b_weights_90_10_over_2000_requests_and_sticky_users(served: Versions) -> None:
    """The canary on real ``axon serve``: a 90/10 rule spreads 2,000 unversioned
    requests within ±3 points, each answer naming its version; with the sticky header a
    user stays on one version. The rule is removed at the end."""
    routing = f"{served.url}/v1/models/{MODEL}/routing"
    rule = {"weights": {"1": 90, "2": 10}, "sticky_header": "X-User-Id"}
    assert httpx.put(routing, json=rule, timeout=10).status_code == 200
    wait_for(
        lambda: httpx.get(routing, timeout=5).json()["rule"] == rule,
        timeout_s=10,
        what="the rule applied",
    )
    body = {"images": [[[0.0] * 8 for _ in range(8)]]}

    def versions(count: int, headers: dict[str, str]) -> list[str]:
        with httpx.Client(base_url=served.url, timeout=30) as client:
            answers = [
                client.post(f"/v1/models/{MODEL}/classify", json=body, headers=headers)
                for _ in range(count)
            ]
        assert all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
        return [a.headers["X-Axon-Model-Version"] for a in answers]

    try:
        # Four clients: under the stack's backlog limit (6 per version), so no 429.
        with ThreadPoolExecutor(4) as pool:
            chosen = [v for part in pool.map(versions, [500] * 4, [{}] * 4) for v in part]
        assert len(chosen) == 2000 and set(chosen) <= {"1", "2"}
        share = chosen.count("1") / len(chosen)
        assert abs(share - 0.90) <= 0.03, share
        users = {f"user-{n}": set(versions(10, {"X-User-Id": f"user-{n}"})) for n in range(30)}
        assert all(len(seen) == 1 for seen in users.values()), users
        assert {v for seen in users.values() for v in seen} <= {"1", "2"}
    finally:
        assert httpx.delete(routing, timeout=10).status_code in (200, 204)
        wait_for(
            lambda: httpx.get(routing, timeout=5).json()["rule"] is None,
            timeout_s=10,
            what="the rule removed",
        )


def test_2_a_new_version_starts_and_the_oldest_drains(served: Versions) -> None:
    pid = served.process.pid
    folder = _add_version(served.repo, served.source, 3, metadata=False)
    wait_for(
        lambda: "digits-cnn version 3 skipped until complete" in served.out,
        timeout_s=10,
        what="the half-written v3 noticed",
    )
    time.sleep(1.5)  # three more polls: still skipped, logged once, nothing started
    assert served.out.count("version 3 skipped until complete") == 1, served.out
    assert "classifier-v3" not in served.out
    assert served.status(f"/v2/models/{MODEL}/versions/1/ready") == 200

    written = time.monotonic()
    _write_metadata(served.source, folder, 3)
    wait_for(
        lambda: served.status(f"/v2/models/{MODEL}/versions/3/ready") == 200,
        timeout_s=90,
        what="v3 ready at the gateway",
    )
    took = time.monotonic() - written
    wait_for(
        lambda: served.status(f"/v2/models/{MODEL}/versions/1/ready") == 503,
        timeout_s=60,
        what="v1 drained away",
    )
    gone = time.monotonic() - written
    wait_for(lambda: "classifier-v1 stopped" in served.out, timeout_s=60, what="v1 stopped")
    print(f"\nv3: metadata.json written → ready at the gateway {took:.1f} s; v1 503 {gone:.1f} s")

    assert served.process.pid == pid and served.process.poll() is None  # no restart
    assert served.status(f"/v2/models/{MODEL}/versions/2/ready") == 200
    listed = served.models()
    assert listed[3]["ready"] and listed[2]["ready"], listed
    assert listed[1]["workers"] == 0 and not listed[1]["ready"], listed
    reply = httpx.post(f"{served.url}/v2/models/{MODEL}/infer", json=infer_image(), timeout=30)
    assert reply.status_code == 200 and reply.json()["model_version"] == "3", reply.text
    out = served.out
    # Make before break: v1 was asked to stop only after v3 was ready.
    assert out.index("classifier-v3 ready") < out.index("stopping classifier-v1"), out
    assert re.search(r"classifier-v1 stopped \(exit code 0\)", out), out
    assert "left the selection (latest:2)" in out, out
    # The supervisor does not restart a version it stopped.
    time.sleep(1.0)
    assert "classifier-v1 restarted" not in served.out
