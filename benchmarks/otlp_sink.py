"""An OTLP/HTTP sink for benchmarks: answers every ``POST /v1/traces`` with 200 and an
empty ``ExportTraceServiceResponse`` after reading the body, and counts what it got. It
decodes nothing, so the cost measured is the traced processes', not a collector's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class SinkCounts:
    endpoint: str = ""
    requests: int = 0
    bytes: int = 0


@contextmanager
def otlp_sink() -> Iterator[SinkCounts]:
    """A running sink on 127.0.0.1 (a free port) until the block ends."""
    counts = SinkCounts()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(size)
            with lock:
                counts.requests += 1
                counts.bytes += size
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    counts.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        server.shutdown()
        server.server_close()
