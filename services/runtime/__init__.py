"""Shared runtime of the Axon model services and the gateway.

Modules, one concern each:

- ``errors``: domain exceptions and the error codes that travel in replies.
- ``settings``: the frozen worker settings object built from ``AXON_*`` variables.
- ``repository``: model repository reader and ``metadata.json`` / sha256 validation.
- ``session``: ONNX Runtime session factory (provider choice, threads, IOBinding, warm-up).
- ``codec``: msgpack tensor codec (raw little-endian bytes, OIP datatype names).
- ``tasks``: request validation and task-specific input preparation (generator latents).
- ``batching``: pure batch collation with an injected clock.
- ``executor``: stack rows of many requests, one ONNX Runtime run, split back.
- ``protocol``: the Redis protocol shared with the gateway.
- ``worker``: the asyncio worker loop; ``stats``: the counters in its heartbeat.
- ``metrics``: every ``axon_*`` worker metric; ``gpu``: GPU memory reading.
- ``redis_server``: start a private real Redis server.
- ``standalone``: ``python -m services.runtime.standalone``, a worker without BentoML.
"""
