"""What the sync and async clients share: base URL, headers (API key), the retry policy
and the clock, and how a ``Call`` becomes a URL, headers and a final answer."""

from __future__ import annotations

import random as _random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from .calls import Call, Response
from .retry import NO_RETRY, RetryPolicy

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 60.0
"""Read timeout of the client's own httpx client: above the gateway's default deadline
(30 s), so the gateway's 504 comes back rather than a client-side timeout."""
DEFAULT_RETRY = RetryPolicy()


class ClientBase:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        headers: Mapping[str, str] | None,
        retry: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
        idempotent: bool = False,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self._headers = {k.lower(): v for k, v in (headers or {}).items()}
        if api_key is not None:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._clock = clock
        self._random = random
        self.idempotent = idempotent
        """Send every inference call with its own ``Idempotency-Key`` (kept across the
        call's retries), so a retry after a lost answer is not run twice by the gateway."""

    def _url(self, call: Call[Any]) -> str:
        return self.base_url + call.path

    def _request_headers(self, call: Call[Any]) -> dict[str, str]:
        """The call's headers, once per ``send``: every retry of it sends the same ones
        (so the same ``Idempotency-Key`` with ``idempotent``)."""
        headers = {**self._headers, **call.headers}
        if self.idempotent and call.method == "POST" and "idempotency-key" not in headers:
            headers["idempotency-key"] = uuid.uuid4().hex
        return headers

    def _policy(self, call: Call[Any]) -> RetryPolicy:
        return self.retry if call.retry else NO_RETRY


def answer(response: Response) -> tuple[int, str | None]:
    """A response's status and ``Retry-After`` (for ``retry.call``)."""
    return response.status_code, response.headers.get("retry-after")
