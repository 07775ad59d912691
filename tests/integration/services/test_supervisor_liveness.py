"""``axon serve`` restarts a child that says it is not alive (issue 9: "if a task ever
stops anyway, liveness turns red so the orchestrator restarts the process"; under
``axon serve`` the supervisor is that orchestrator). Real child processes: a small HTTP
server that is ready at once and whose liveness turns 503 once a marker file exists,
as the gateway's ``/healthz/live`` does when one of its background tasks has ended."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from services.runtime.redis_server import free_port
from services.serve import ChildSpec, Supervisor

pytestmark = pytest.mark.integration

CHILD = r"""
import http.server, os, sys
marker = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        dead = self.path == "/live" and os.path.exists(marker)
        self.send_response(503 if dead else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
print("child", os.getpid(), flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_a_child_reporting_503_on_liveness_is_restarted(tmp_path: Path) -> None:
    port = free_port()
    marker = tmp_path / "dead"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    spec = ChildSpec(
        "gateway",
        "gateway",
        (sys.executable, str(script), str(port), str(marker)),
        {},
        ready_url=f"http://127.0.0.1:{port}/ready",
        live_url=f"http://127.0.0.1:{port}/live",
    )
    supervisor = Supervisor([spec], tmp_path)
    stop = threading.Event()
    supervisor.start(stop)
    try:
        child = supervisor.child("gateway")
        first = child.process.pid if child.process else None

        def tick_until(done: object, timeout_s: float) -> None:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                supervisor.tick()
                if callable(done) and done():
                    return
                time.sleep(0.05)
            raise AssertionError("timed out")

        tick_until(lambda: child.ready, 30)
        # Alive: several liveness rounds pass without a restart.
        child.next_live = 0.0
        tick_until(lambda: child.next_live > 0, 5)
        assert child.process is not None and child.process.pid == first
        marker.write_text("")
        child.next_live = 0.0
        tick_until(
            lambda: child.ready and child.process is not None and child.process.pid != first,
            60,
        )
        marker.unlink()
    finally:
        supervisor.stop(threading.Event())
