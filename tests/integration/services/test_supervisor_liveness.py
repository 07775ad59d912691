"""``axon serve`` restarts a child that says it is not alive (issue 9: "if a task ever
stops anyway, liveness turns red so the orchestrator restarts the process"; under
``axon serve`` the supervisor is that orchestrator).

Real processes: the real ``Supervisor`` runs in a process of its own (as ``axon serve``
does: it adopts and kills every unknown child of its process, so it must not run inside
pytest's), supervising a small HTTP server that is ready at once and whose liveness
turns 503 once a marker file exists, as the gateway's ``/healthz/live`` does when one
of its background tasks has ended."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.runtime.redis_server import free_port

ROOT = Path(__file__).resolve().parents[3]

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
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

DRIVER = r"""
import json, os, sys, threading, time
from pathlib import Path
from services.serve import ChildSpec, Supervisor

script, port, marker, log_dir = sys.argv[1:5]
spec = ChildSpec(
    "gateway", "gateway", (sys.executable, script, port, marker), dict(os.environ),
    ready_url=f"http://127.0.0.1:{port}/ready", live_url=f"http://127.0.0.1:{port}/live",
)
supervisor = Supervisor([spec], Path(log_dir))
supervisor.start(threading.Event())
child = supervisor.child("gateway")


def tick_until(done, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        supervisor.tick()
        if done():
            return True
        time.sleep(0.05)
    return False


result = {"ready": tick_until(lambda: child.ready, 30)}
first = child.process.pid
child.next_live = 0.0
tick_until(lambda: child.next_live > 0, 5)  # one liveness round: 200, no restart
result["kept_while_alive"] = child.process is not None and child.process.pid == first
Path(marker).write_text("")
child.next_live = 0.0
result["restarted"] = tick_until(
    lambda: child.ready and child.process is not None and child.process.pid != first, 60
)
supervisor.stop(threading.Event())
print(json.dumps(result))
"""


def test_a_child_reporting_503_on_liveness_is_restarted(tmp_path: Path) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "driver.py").write_text(DRIVER)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "child.py"),
         str(free_port()), str(tmp_path / "dead"), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"ready": True, "kept_while_alive": True, "restarted": True}, result
    assert "reports itself not alive (503 from" in proc.stdout + proc.stderr
