"""A typed Python client for Axon's gateway: the Open Inference Protocol v2 REST
(binary tensor data by default) and the task endpoints, blocking (``AxonClient``) or
asynchronous (``AsyncAxonClient``), with retries of 429/503 that honour ``Retry-After``.

    from services.client import AxonClient
    with AxonClient("http://127.0.0.1:8000") as axon:
        result = axon.infer("digits-cnn", {"image": images})   # np.float32 [N, 1, 8, 8]
        result["probabilities"]                                  # np.ndarray [N, 10]

It depends on numpy and httpx only, and its modules import each other relatively, so
the folder can be copied into another project as is. Docs: docs/client.md.

- ``codec``: OIP infer bodies (JSON and binary) ↔ numpy, pure
- ``retry``: the retry policy and loops (clock and sleep injected), pure
- ``calls``: every endpoint as a request plus the reader of its answer, pure
- ``results``: the typed answers; ``errors``: ``AxonHTTPError``
- ``sync_client`` / ``async_client``: the two clients, which only send calls
"""

from __future__ import annotations

from .async_client import AsyncAxonClient
from .codec import Body, InferResult, ResponseFormatError, decode_infer, encode_infer
from .errors import AxonHTTPError
from .results import (
    ClassifyResult,
    ForecastResult,
    GenerateResult,
    ModelMetadata,
    ModelSummary,
    Prediction,
    Score,
    ServerMetadata,
    TensorSpec,
    VersionStatus,
)
from .retry import NO_RETRY, RetryPolicy
from .sync_client import AxonClient

__all__ = [
    "NO_RETRY",
    "AsyncAxonClient",
    "AxonClient",
    "AxonHTTPError",
    "Body",
    "ClassifyResult",
    "ForecastResult",
    "GenerateResult",
    "InferResult",
    "ModelMetadata",
    "ModelSummary",
    "Prediction",
    "ResponseFormatError",
    "RetryPolicy",
    "Score",
    "ServerMetadata",
    "TensorSpec",
    "VersionStatus",
    "decode_infer",
    "encode_infer",
]
