"""What the gateway and the model services share, and nothing else: the wire contract
between them and the Redis plumbing both sides use.

- ``errors``: domain exceptions and the error codes that travel in replies.
- ``codec``: msgpack tensor codec for stream entries and replies (OIP datatype names).
- ``protocol``: the Redis protocol (keys, scripts, entries, heartbeats).
- ``metadata``: ``metadata.json`` parsed and validated (tensor specs, task fields).
- ``inputs``: the input rules a request must meet for a model (the one validator).
- ``resilience``: Redis error classes, backoff and failure logs for long-lived tasks.
- ``redis_client``: the shared retrying asyncio Redis client.

The gateway imports only this package (never ``services.runtime``, the worker side);
``tests/unit/test_layers.py`` fails if it does.
"""
