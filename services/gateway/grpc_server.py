"""Start and stop the gateway's OIP gRPC server (``grpc_service``) in the app's lifespan,
on its event loop (``grpc.aio``), when ``AXON_GRPC_PORT`` / ``--grpc-port`` is not 0.

Limits as REST: a message over ``AXON_MAX_BODY_BYTES`` is refused by gRPC itself
(RESOURCE_EXHAUSTED), at most ``AXON_MAX_CONNECTIONS`` RPCs run at once (beyond it,
RESOURCE_EXHAUSTED), and request bytes count against ``AXON_MAX_INFLIGHT_BYTES``
together with HTTP bodies. The port is bound exclusively (no ``SO_REUSEPORT``): a port
another process holds is an error at start-up, not a second server sharing it.
"""

from __future__ import annotations

import logging

import grpc

from services.contract.errors import SettingsError
from services.gateway.grpc_service import OipGrpcService
from services.gateway.settings import GatewaySettings
from services.gateway.state import GatewayState

log = logging.getLogger(__name__)

MAX_CONNECTION_AGE_MS = 300_000
"""Longest life of one client connection (gRPC sends GOAWAY after it)."""


async def start_grpc(state: GatewayState) -> grpc.aio.Server | None:
    """The started gRPC server of ``state``'s gateway, or None when the port is 0.
    Raises ``SettingsError`` when the address cannot be bound."""
    settings = state.settings
    if not settings.grpc_port:
        return None
    server = grpc.aio.server(
        handlers=OipGrpcService(state).handlers(),
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_connections,
    )
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise SettingsError(
            f"AXON_GRPC_PORT={settings.grpc_port}: cannot listen on {address} ({exc}); is "
            "another process using it? Choose another port (--grpc-port) or 0 for no gRPC"
        ) from None
    await server.start()
    log.info("OIP gRPC on %s", address)
    return server


def server_options(settings: GatewaySettings) -> list[tuple[str, int]]:
    """Channel arguments of the gateway's gRPC server."""
    return [
        # Exclusive (a taken port fails at start-up) unless gateway processes share it.
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        # A client connection lives at most ~5 min (then GOAWAY, RPCs in flight get 30 s):
        # clients reconnect and spread over gateway replicas added since.
        ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
        ("grpc.max_connection_age_grace_ms", 30_000),
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", -1),
    ]


async def stop_grpc(server: grpc.aio.Server | None, settings: GatewaySettings) -> None:
    """Stop taking RPCs; those in flight may run to their deadline (at most
    ``AXON_MAX_TIMEOUT_MS``, as HTTP requests do while uvicorn drains), then are
    cancelled."""
    if server is not None:
        await server.stop(settings.max_timeout_ms / 1000 + 1)
