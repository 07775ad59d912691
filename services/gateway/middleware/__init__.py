"""Pure ASGI middlewares of the gateway, one per file."""
