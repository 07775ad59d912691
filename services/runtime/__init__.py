"""The worker side of Axon: what only model services run (the gateway never imports it).

Modules, one concern each:

- ``settings``: the frozen worker settings object built from ``AXON_*`` variables.
- ``repository``: model repository reader (files, sha256 check).
- ``session``: ONNX Runtime session factory (provider choice, threads, IOBinding, warm-up).
- ``prepare``: a checked request → the model's input tensors (generator latents).
- ``batching``: pure batch collation with an injected clock.
- ``executor``: stack rows of many requests, one ONNX Runtime run, split back.
- ``worker``: the asyncio worker loop; ``stats``: the counters in its heartbeat.
- ``metrics``: every ``axon_*`` worker metric; ``gpu``: GPU memory reading.
- ``redis_server``: start a private real Redis server.
- ``standalone``: ``python -m services.runtime.standalone``, a worker without BentoML.

What the worker shares with the gateway (codec, protocol, errors, metadata, input
rules) lives in ``services.contract``.
"""
