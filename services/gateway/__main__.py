"""``python -m services.gateway [--host H] [--port P] [--grpc-port G] [--reuse-port]``:
serve the gateway with uvicorn (``server.serve``: header and body timeouts, connection cap) and
its OIP gRPC server on ``G`` (default ``AXON_GRPC_PORT``, else 8001; 0 = none) on the same
host.

Settings come from ``AXON_*`` variables (docs/gateway.md); a bad value stops it at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from services.contract import logs
from services.contract.errors import SettingsError
from services.gateway.app import begin_drain, create_app
from services.gateway.server import serve
from services.gateway.settings import GatewaySettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="OIP gRPC port (default: AXON_GRPC_PORT, else 8001); 0 = no gRPC server",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="share --port (and the gRPC port) with other gateway processes (SO_REUSEPORT)",
    )
    args = parser.parse_args(argv)
    try:
        level = logs.configure(os.environ)
    except SettingsError as exc:
        print(f"axon gateway: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("AXON_ACCESS_LOG", "false").lower() not in ("1", "true", "yes", "on"):
        logging.getLogger("services.gateway.access").setLevel(logging.WARNING)
    try:
        settings = GatewaySettings.from_env(os.environ)
    except SettingsError as exc:
        print(f"axon gateway: {exc}", file=sys.stderr)
        return 2
    grpc_port = settings.grpc_port if args.grpc_port is None else args.grpc_port
    if not 0 <= grpc_port <= 65535:
        print(f"axon gateway: --grpc-port {grpc_port}: must be 1..65535, or 0", file=sys.stderr)
        return 2
    settings = dataclasses.replace(
        settings, grpc_port=grpc_port, grpc_host=args.host, reuse_port=args.reuse_port
    )
    app = create_app(settings)
    serve(
        app,
        settings,
        host=args.host,
        port=args.port,
        log_level=level.lower(),
        on_exit=lambda: begin_drain(app),
        reuse_port=args.reuse_port,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
