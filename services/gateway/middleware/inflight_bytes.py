"""Bound the request bodies the gateway holds at once (``AXON_MAX_INFLIGHT_BYTES``).

A request's memory at the gateway is a multiple of its body (the bytes, the parsed JSON,
the arrays, the encoded entry): measured ~14× before the handlers dropped what they no
longer need across the await. So the sum of bodies in flight bounds the gateway's
memory. Each request with a body reserves its ``Content-Length`` (a chunked upload, the
body limit ``AXON_MAX_BODY_BYTES``: ``body_limit.Admission.size``) until its response is
sent; a request that does not fit is refused at once with 503 + ``Retry-After``, before
its body is read (``edge.Edge`` applies it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ByteBudget:
    """A counter of reserved bytes under ``limit`` (pure; one event loop, no lock).

    A single reservation larger than ``limit`` is granted when nothing else is reserved,
    so a body the body limit allows is never refused forever.
    """

    limit: int
    reserved: int = 0

    def try_reserve(self, size: int) -> bool:
        if self.reserved and self.reserved + size > self.limit:
            return False
        self.reserved += size
        return True

    def release(self, size: int) -> None:
        self.reserved = max(self.reserved - size, 0)

    def refusal(self, retry_after_s: int) -> str:
        """The client message of a request that did not fit."""
        return (
            f"the gateway holds {self.reserved} bytes of request bodies in flight "
            f"(limit {self.limit}, AXON_MAX_INFLIGHT_BYTES); retry after "
            f"{retry_after_s}s or send smaller requests"
        )
