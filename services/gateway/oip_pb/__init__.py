"""Generated protobuf/gRPC stubs of the Open Inference Protocol's gRPC form (Triton's
``grpc_service.proto``, package ``inference``) and of ``grpc.health.v1``.

Committed, not built at install time; regenerate with ``make grpc-stubs``
(``scripts/grpc_stubs.py``, pinned ``grpcio-tools``). Do not edit the ``*_pb2*`` files.
The gateway's server uses the message classes (``grpc_service_pb2``); the
``*_pb2_grpc`` stubs are for clients, e.g.
``grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)``.
"""
